package cache

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/metrics"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/blobtest"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/fs"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
)

// TestFilesystemStoreIsTheSpool covers fills whose store writer can be read
// back (blob.Spooler): followers read the store's temporary file, nothing
// is written to the spool directory, and a bad transfer leaves nothing.
func TestFilesystemStoreIsTheSpool(t *testing.T) {
	t.Parallel()
	root, spoolDir := t.TempDir(), t.TempDir()
	st, err := fs.New(root)
	if err != nil {
		t.Fatal(err)
	}
	up := newFakeUpstream()
	ups := upstreamSet{"test": up}
	c, err := New(st, "team-a", metrics.New(),
		WithSpoolDir(spoolDir), WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	body := blobtest.Content(4<<20, 9)
	d := oci.FromBytes(body)
	up.blobs[d.String()] = body
	gate := make(chan struct{})
	up.gate = gate

	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(off int64) {
			defer wg.Done()
			got, err := readBlob(context.Background(), c, ups, blobRoute(d), off, -1)
			if err != nil || string(got) != string(body[off:]) {
				t.Errorf("reader at %d: %d bytes, %v", off, len(got), err)
			}
		}(int64(i) * 4096)
	}
	close(gate)
	wg.Wait()
	waitStored(t, st, blob.BlobKey(d))
	if up.blobGets.Load() != 1 {
		t.Fatalf("upstream GETs = %d, want 1", up.blobGets.Load())
	}
	if ents, _ := os.ReadDir(spoolDir); len(ents) != 0 {
		t.Fatalf("spool dir used although the store file is the spool: %v", ents)
	}

	bad := oci.FromBytes([]byte("expected"))
	up.blobs[bad.String()] = []byte("corrupted")
	up.gate = nil
	if _, err := readBlob(context.Background(), c, ups, blobRoute(bad), 0, -1); err == nil {
		t.Fatal("bad transfer read without error")
	}
	waitFillsDone(t, c)
	if _, err := os.Stat(filepath.Join(root, blob.BlobKey(bad))); !os.IsNotExist(err) {
		t.Fatalf("bad blob visible in the store: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "_uploads")); len(ents) != 0 {
		t.Fatalf("upload left behind: %v", ents)
	}
}
