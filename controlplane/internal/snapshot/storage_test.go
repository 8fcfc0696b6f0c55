package snapshot

import (
	"errors"
	"strings"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/configspec"
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
		s3 := ns.Config.GetStorage().GetS3()
		if s3.GetBucket() != "edge-cache" || s3.GetPrefix() != "shared" || !s3.GetPathStyle() ||
			s3.GetAccessKeyId() != "AKID" || s3.GetSecretAccessKey() != "s3-secret" {
			t.Errorf("namespace %s: storage = %v", name, s3)
		}
		old, _ := without.Namespace(name)
		if old.Config.GetVersion() == ns.Config.GetVersion() {
			t.Errorf("namespace %s: adding storage kept version %s", name, old.Config.GetVersion())
		}
	}
	if with.Version == without.Version {
		t.Error("adding storage kept the Set's version")
	}
	// A new secret alone is a new version too: edges must get it.
	rotated := baseState()
	rotated.Storage = &config.Storage{Bucket: "edge-cache", Prefix: "shared", Endpoint: "http://127.0.0.1:7070", PathStyle: true,
		AccessKeyID: "AKID", SecretAccessKey: "s3-secret-2"}
	if mustBuild(t, rotated).Version == with.Version {
		t.Error("rotating the secret kept the Set's version")
	}

	bad := baseState()
	bad.Storage = &config.Storage{Bucket: "Bad_Bucket"}
	if _, err := (Builder{}).Build(bad); !errors.Is(err, configspec.ErrInvalid) || !strings.Contains(err.Error(), "storage.s3.bucket") {
		t.Fatalf("bad bucket: err = %v", err)
	}
}
