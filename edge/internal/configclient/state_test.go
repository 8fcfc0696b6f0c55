package configclient

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

func TestStateRoundTrip(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state") // created on first save
	for _, v := range []string{"v1", "v2"} {
		want := &selfhostv1.EdgeConfig{Version: v, Nonce: "n", Namespace: "team-a",
			Upstreams: []*selfhostv1.Upstream{{Prefix: "ghcr", Url: "https://ghcr.io", Credentials: &selfhostv1.Credentials{Username: "u", Password: "p"}}}}
		if err := saveState(dir, want); err != nil {
			t.Fatal(err)
		}
		got, err := loadState(dir)
		if err != nil || !proto.Equal(got, want) {
			t.Fatalf("load = %v, %v; want %v", got, err, want)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("left behind: %v", entries)
	}
	di, _ := os.Stat(dir)
	fi, _ := os.Stat(filepath.Join(dir, stateFile))
	if di.Mode().Perm() != 0o700 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("modes dir %v file %v", di.Mode().Perm(), fi.Mode().Perm())
	}
}

func TestStateUnwritable(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// A path below a regular file cannot be a directory, even for root.
	if err := saveState(filepath.Join(file, "state"), &selfhostv1.EdgeConfig{Version: "v1"}); err == nil {
		t.Fatal("saved below a regular file")
	}
}

type acceptAll struct{ got *selfhostv1.EdgeConfig }

func (a *acceptAll) Apply(cfg *selfhostv1.EdgeConfig) error { a.got = cfg; return nil }

// The shared S3 credentials reach the Applier but never the state file.
func TestPersistedStateHasNoStorageCredentials(t *testing.T) {
	t.Parallel()
	const keyID, secret = "AKIDPERSISTTEST", "persist-test-s3-secret"
	dir := t.TempDir()
	a := &acceptAll{}
	c, err := New("127.0.0.1:1", "team-a", a, nil, nil, WithStateDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	cfg := &selfhostv1.EdgeConfig{Version: "v1", Nonce: "n", Namespace: "team-a",
		Storage: &selfhostv1.StorageConfig{S3: &selfhostv1.S3Storage{Bucket: "edge-cache", Endpoint: "http://127.0.0.1:7070",
			PathStyle: true, AccessKeyId: keyID, SecretAccessKey: secret}}}
	if ack := c.handleConfig(cfg); !ack.GetAccepted() {
		t.Fatalf("NACK: %s", ack.GetErrorDetail())
	}
	if s3 := a.got.GetStorage().GetS3(); s3.GetAccessKeyId() != keyID || s3.GetSecretAccessKey() != secret {
		t.Fatalf("applier got storage %v, want the credentials", s3)
	}
	if cfg.GetStorage().GetS3().GetSecretAccessKey() != secret {
		t.Fatal("persisting modified the received configuration")
	}
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{keyID, secret} {
		if strings.Contains(string(data), s) {
			t.Fatalf("state file holds a storage credential:\n%s", data)
		}
	}
	got, err := loadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s3 := got.GetStorage().GetS3(); s3.GetBucket() != "edge-cache" || !s3.GetPathStyle() || s3.GetAccessKeyId() != "" {
		t.Fatalf("persisted storage = %v, want it without credentials", s3)
	}
}
