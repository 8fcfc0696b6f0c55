package s3_test

import (
	"bytes"
	"io"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/blobtest"
)

// TestPutFile stores verified local files of one part and of several
// parallel parts, and checks that nothing is left half uploaded.
func TestPutFile(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	st := srv.store(t)
	putter, ok := blob.Store(st).(blob.FilePutter)
	if !ok {
		t.Fatal("the S3 store does not implement blob.FilePutter")
	}
	for _, size := range []int{1000, 17 << 20} { // one PutObject; four 5 MiB parts
		data := blobtest.Content(size, uint64(size))
		want := blobtest.ExpectFor(data, "")
		key := blob.BlobKey(want.Digest)
		if err := putter.PutFile(t.Context(), key, bytes.NewReader(data), want); err != nil {
			t.Fatalf("PutFile(%d bytes): %v", size, err)
		}
		rc, err := st.Open(t.Context(), key, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read back %d of %d bytes, err %v", len(got), size, err)
		}
	}
	if keys := srv.pendingUploads(t); len(keys) > 0 {
		t.Fatalf("multipart uploads left behind: %v", keys)
	}
}
