package admin

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

const (
	s3KeyID  = "AKIDADMINTEST"
	s3Secret = "admin-test-s3-secret-access-key"
)

// TestStorageCredentialsNeverLeave calls every read-only method and checks
// that no response (in text or JSON form, as grpcurl shows it) and no log
// line carries the shared S3 credentials, while the edges' snapshot does.
func TestStorageCredentialsNeverLeave(t *testing.T) {
	t.Parallel()
	svc, logs := newService(t, nil)
	ctx := t.Context()
	var resps []proto.Message
	add := func(m proto.Message, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		resps = append(resps, m)
	}
	add(svc.GetNamespaceConfig(ctx, &selfhostv1.GetNamespaceConfigRequest{Namespace: "team-a"}))
	add(svc.ListUpstreams(ctx, &selfhostv1.ListUpstreamsRequest{}))
	add(svc.ListEdges(ctx, &selfhostv1.ListEdgesRequest{}))
	add(svc.GetCacheStats(ctx, &selfhostv1.GetCacheStatsRequest{Namespace: "team-a"}))
	for _, m := range resps {
		js, err := protojson.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{s3KeyID, s3Secret} {
			if strings.Contains(string(js), s) || strings.Contains(prototext.Format(m), s) {
				t.Errorf("%T leaks an S3 credential: %s", m, js)
			}
		}
	}
	cfg := resps[0].(*selfhostv1.GetNamespaceConfigResponse).GetConfig()
	if cfg.GetStorage().GetBrokered() == nil || cfg.GetStorage().GetS3() != nil {
		t.Errorf("storage = %v, want brokered (edges get no bucket and no keys)", cfg.GetStorage())
	}
	if strings.Contains(logs.String(), s3KeyID) || strings.Contains(logs.String(), s3Secret) {
		t.Errorf("log leaks an S3 credential: %s", logs.String())
	}
	ns, _ := svc.config.Current().Namespace("team-a")
	if strings.Contains(prototext.Format(ns.Config), s3Secret) || ns.Config.GetStorage().GetS3() != nil {
		t.Fatal("the snapshot the edges receive carries the S3 storage")
	}
}
