package control

import (
	"os"
	"path/filepath"
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
