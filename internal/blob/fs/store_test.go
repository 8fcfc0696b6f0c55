package fs_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/blobtest"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/fs"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
)

func newStore(t *testing.T) (*fs.Store, string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "store")
	s, err := fs.New(root)
	if err != nil {
		t.Fatal(err)
	}
	return s, root
}

func TestConformance(t *testing.T) {
	t.Parallel()
	blobtest.Run(t, func(t *testing.T) blob.Store {
		s, root := newStore(t)
		// Whatever a sub-test did, no temporary file may outlive it.
		t.Cleanup(func() { assertEmptyDir(t, filepath.Join(root, "_uploads")) })
		return s
	})
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left behind in %s: %s", dir, e.Name())
	}
}

func commit(t *testing.T, s blob.Store, key string, data []byte, contentType string) {
	t.Helper()
	w, err := s.Create(t.Context(), key, blobtest.ExpectFor(data, contentType))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestLayoutOnDisk(t *testing.T) {
	t.Parallel()
	s, root := newStore(t)
	data := []byte("layer")
	key := blob.BlobKey(oci.FromBytes(data))
	commit(t, s, key, data, "application/x-test")
	got, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(key)))
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("data file = %q, %v", got, err)
	}
	got, err = os.ReadFile(filepath.Join(root, "_meta", filepath.FromSlash(key)))
	if err != nil || string(got) != "application/x-test" {
		t.Errorf("meta file = %q, %v", got, err)
	}
	// An object placed by hand, without meta, is served with no type.
	hand := filepath.Join(root, "blobs", "sha256", "byhand")
	if err := os.WriteFile(hand, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	info, err := s.Stat(t.Context(), "blobs/sha256/byhand")
	if err != nil || info.Size != 1 || info.ContentType != blob.DefaultContentType {
		t.Errorf("Stat of hand-placed object = %+v, %v", info, err)
	}
	// A directory is not an object.
	if _, err := s.Stat(t.Context(), "blobs/sha256"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat of a directory = %v, want ErrNotFound", err)
	}
	if _, err := s.Stat(t.Context(), key+"/below"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat below a file = %v, want ErrNotFound", err)
	}
}

// TestSendfileShapes checks the reader types net/http can turn into
// sendfile: the *os.File itself, or an io.WriterTo passing on an
// *io.LimitedReader of one.
func TestSendfileShapes(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	data := blobtest.Content(10000, 1)
	commit(t, s, "blobs/sha256/f", data, "")

	rc, err := s.Open(t.Context(), "blobs/sha256/f", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rc.(*os.File); !ok {
		t.Errorf("whole-object Open returned %T, want *os.File", rc)
	}
	rc.Close()

	rc, err = s.Open(t.Context(), "blobs/sha256/f", 100, 5000)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	wt, ok := rc.(io.WriterTo)
	if !ok {
		t.Fatalf("ranged Open returned %T, want an io.WriterTo", rc)
	}
	rf := &readFromRecorder{}
	if n, err := wt.WriteTo(rf); err != nil || n != 5000 {
		t.Fatalf("WriteTo = %d, %v", n, err)
	}
	if _, ok := rf.src.(*io.LimitedReader); !ok {
		t.Errorf("ReadFrom got %T, want *io.LimitedReader", rf.src)
	}
	if !bytes.Equal(rf.buf.Bytes(), data[100:5100]) {
		t.Error("ranged WriteTo wrote the wrong bytes")
	}
}

type readFromRecorder struct {
	buf bytes.Buffer
	src io.Reader
}

func (r *readFromRecorder) Write(p []byte) (int, error) { return r.buf.Write(p) }
func (r *readFromRecorder) ReadFrom(src io.Reader) (int64, error) {
	r.src = src
	return r.buf.ReadFrom(src)
}

func TestStaleUploadsRemoved(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	uploads := filepath.Join(root, "_uploads")
	if err := os.MkdirAll(uploads, 0o755); err != nil {
		t.Fatal(err)
	}
	stale, fresh := filepath.Join(uploads, "blob-old"), filepath.Join(uploads, "blob-new")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.New(root); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale upload still there: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh upload removed: %v", err)
	}
}

func TestListSkipsBookkeeping(t *testing.T) {
	t.Parallel()
	s, root := newStore(t)
	commit(t, s, "a/1", []byte("1"), "t")
	// An upload in progress and the meta tree are never listed.
	w, err := s.Create(t.Context(), "a/2", blobtest.ExpectFor([]byte("2"), ""))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := w.Abort(t.Context()); err != nil {
			t.Errorf("Abort: %v", err)
		}
	}()
	if _, err := w.Write([]byte("2")); err != nil {
		t.Fatal(err)
	}
	var keys []string
	err = s.List(t.Context(), "", func(key string, _ blob.Info) error {
		keys = append(keys, key)
		return nil
	})
	if err != nil || len(keys) != 1 || keys[0] != "a/1" {
		t.Errorf("List = %v, %v; want [a/1]", keys, err)
	}
	if _, err := os.Stat(filepath.Join(root, "_meta", "a", "1")); err != nil {
		t.Errorf("meta of a/1: %v", err)
	}
}
