package snapshot

import (
	"errors"
	"strings"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/configspec"
)

func TestBuildStorage(t *testing.T) {
	t.Parallel()
	without := mustBuild(t, baseState())
	st := baseState()
	st.Storage = &config.Storage{Bucket: "edge-cache", Prefix: "shared", Endpoint: "http://127.0.0.1:7070", PathStyle: true,
		AccessKeyID: "AKID", SecretAccessKey: "s3-secret"}
	with := mustBuild(t, st)
	for _, name := range with.NamespaceNames() {
		ns, _ := with.Namespace(name)
		// Edges get the broker, never the bucket or its keys.
		if ns.Config.GetStorage().GetBrokered() == nil || ns.Config.GetStorage().GetS3() != nil {
			t.Errorf("namespace %s: storage = %v, want brokered only", name, ns.Config.GetStorage())
		}
		if strings.Contains(ns.Config.String(), "s3-secret") || strings.Contains(ns.Config.String(), "AKID") {
			t.Errorf("namespace %s: the edge configuration carries the S3 keys", name)
		}
		old, _ := without.Namespace(name)
		if old.Config.GetVersion() == ns.Config.GetVersion() {
			t.Errorf("namespace %s: adding storage kept version %s", name, old.Config.GetVersion())
		}
	}
	if with.Version == without.Version {
		t.Error("adding storage kept the Set's version")
	}
	// A new secret is the control plane's alone: edges see no change.
	rotated := baseState()
	rotated.Storage = &config.Storage{Bucket: "edge-cache", Prefix: "shared", Endpoint: "http://127.0.0.1:7070", PathStyle: true,
		AccessKeyID: "AKID", SecretAccessKey: "s3-secret-2"}
	if mustBuild(t, rotated).Version != with.Version {
		t.Error("rotating the secret changed what edges receive")
	}

	bad := baseState()
	bad.Storage = &config.Storage{Bucket: "Bad_Bucket"}
	if _, err := (Builder{}).Build(bad); !errors.Is(err, configspec.ErrInvalid) || !strings.Contains(err.Error(), "storage.s3.bucket") {
		t.Fatalf("bad bucket: err = %v", err)
	}
}
