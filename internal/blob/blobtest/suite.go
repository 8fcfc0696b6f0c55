package blobtest

import (
	"bytes"
	"context"
	"crypto/sha512"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
)

// Run runs the conformance suite. newStore is called once per sub-test and
// must return an empty store that no other sub-test uses (a fresh directory,
// or a fresh key prefix in a shared bucket); sub-tests run in parallel.
func Run(t *testing.T, newStore func(t *testing.T) blob.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s blob.Store)
	}{
		{"commit makes visible", testCommitVisible},
		{"stat info", testStatInfo},
		{"missing key", testMissing},
		{"open ranges", testOpenRanges},
		{"empty object", testEmpty},
		{"wrong digest", testWrongDigest},
		{"wrong size", testWrongSize},
		{"unknown size", testUnknownSize},
		{"abort", testAbort},
		{"abort after commit", testAbortAfterCommit},
		{"write after commit", testWriteAfterCommit},
		{"commit with cancelled context", testCommitCancelled},
		{"context cancelled mid-write", testCancelMidWrite},
		{"concurrent writers", testConcurrentWriters},
		{"put overwrite", testPutOverwrite},
		{"delete idempotent", testDelete},
		{"list by prefix", testList},
		{"list stops on error", testListStop},
		{"invalid keys", testInvalidKeys},
		{"large blob", testLarge},
		{"sha512 digest", testSHA512},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

// Content returns n deterministic pseudo-random bytes for seed.
func Content(n int, seed uint64) []byte {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

// ExpectFor returns the Expect (sha256 digest, exact size) of data.
func ExpectFor(data []byte, contentType string) blob.Expect {
	return blob.Expect{Digest: oci.FromBytes(data), Size: int64(len(data)), ContentType: contentType}
}

func sha512Of(data []byte) oci.Digest {
	sum := sha512.Sum512(data)
	return oci.Digest{Algorithm: "sha512", Hex: fmt.Sprintf("%x", sum[:])}
}

// write creates key, writes data in chunks of chunk bytes and commits,
// returning Commit's error. Create and Write must succeed.
func write(t *testing.T, s blob.Store, key string, data []byte, want blob.Expect, chunk int) error {
	t.Helper()
	ctx := t.Context()
	w, err := s.Create(ctx, key, want)
	if err != nil {
		t.Fatalf("Create(%s): %v", key, err)
	}
	defer func() {
		if err := w.Abort(context.WithoutCancel(ctx)); err != nil {
			t.Errorf("Abort(%s): %v", key, err)
		}
	}()
	for rest := data; len(rest) > 0; {
		n := min(chunk, len(rest))
		if m, err := w.Write(rest[:n]); err != nil || m != n {
			t.Fatalf("Write(%s) = %d, %v; want %d, nil", key, m, err, n)
		}
		rest = rest[n:]
	}
	return w.Commit(ctx)
}

func mustWrite(t *testing.T, s blob.Store, key string, data []byte, contentType string) {
	t.Helper()
	if err := write(t, s, key, data, ExpectFor(data, contentType), 4096); err != nil {
		t.Fatalf("Commit(%s): %v", key, err)
	}
}

func read(t *testing.T, s blob.Store, key string, offset, length int64) []byte {
	t.Helper()
	rc, err := s.Open(t.Context(), key, offset, length)
	if err != nil {
		t.Fatalf("Open(%s, %d, %d): %v", key, offset, length, err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s [%d,+%d): %v", key, offset, length, err)
	}
	return got
}

func listKeys(t *testing.T, s blob.Store, prefix string) []string {
	t.Helper()
	keys := []string{}
	err := s.List(t.Context(), prefix, func(key string, _ blob.Info) error {
		keys = append(keys, key)
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	slices.Sort(keys)
	return keys
}

// assertInvisible checks that nothing at all can be seen at key.
func assertInvisible(t *testing.T, s blob.Store, key string) {
	t.Helper()
	if _, err := s.Stat(t.Context(), key); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat(%s) error = %v, want ErrNotFound", key, err)
	}
	if rc, err := s.Open(t.Context(), key, 0, -1); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Open(%s) error = %v, want ErrNotFound", key, err)
		if err == nil {
			rc.Close()
		}
	}
	if keys := listKeys(t, s, ""); len(keys) != 0 {
		t.Errorf("List after failed write = %v, want nothing", keys)
	}
}

func assertContent(t *testing.T, s blob.Store, key string, want []byte) {
	t.Helper()
	if got := read(t, s, key, 0, -1); !bytes.Equal(got, want) {
		t.Errorf("content of %s differs: got %d bytes, want %d", key, len(got), len(want))
	}
}

func testCommitVisible(t *testing.T, s blob.Store) {
	data := Content(3000, 1)
	want := ExpectFor(data, "application/octet-stream")
	key := blob.BlobKey(want.Digest)
	ctx := t.Context()
	w, err := s.Create(ctx, key, want)
	if err != nil {
		t.Fatal(err)
	}
	defer abort(t, ctx, w)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	// Written but not committed: invisible.
	assertInvisible(t, s, key)
	if err := w.Commit(ctx); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	assertContent(t, s, key, data)
	if got := listKeys(t, s, ""); !slices.Equal(got, []string{key}) {
		t.Errorf("List = %v, want [%s]", got, key)
	}
}

func testStatInfo(t *testing.T, s blob.Store) {
	tests := []struct {
		name, key, contentType string
		size                   int
	}{
		{"layer", "blobs/sha256/aa", "application/vnd.oci.image.layer.v1.tar+gzip", 1234},
		{"manifest", "manifests/sha256/bb", oci.MediaTypeOCIManifest, 567},
		{"tag", "tenants/ns/dockerhub/library/x/_tags/latest", "application/json", 89},
		{"no type", "blobs/sha256/cc", "", 10},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := Content(tc.size, uint64(10+i))
			mustWrite(t, s, tc.key, data, tc.contentType)
			info, err := s.Stat(t.Context(), tc.key)
			if err != nil {
				t.Fatal(err)
			}
			if wantType := blob.ContentTypeOr(tc.contentType); info.Size != int64(tc.size) || info.ContentType != wantType {
				t.Errorf("Stat = size %d type %q, want %d %q", info.Size, info.ContentType, tc.size, wantType)
			}
			if info.ModTime.IsZero() {
				t.Error("Stat ModTime is zero")
			}
			err = s.List(t.Context(), tc.key, func(key string, li blob.Info) error {
				if key == tc.key && li.Size != int64(tc.size) {
					t.Errorf("List size = %d, want %d", li.Size, tc.size)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func testMissing(t *testing.T, s blob.Store) {
	assertInvisible(t, s, "blobs/sha256/missing")
	if rc, err := s.Open(t.Context(), "blobs/sha256/missing", 10, 5); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("ranged Open of missing key error = %v, want ErrNotFound", err)
		if err == nil {
			rc.Close()
		}
	}
}

func testOpenRanges(t *testing.T, s blob.Store) {
	const key = "blobs/sha256/ranges"
	data := Content(1000, 2)
	mustWrite(t, s, key, data, "")
	tests := []struct {
		name           string
		offset, length int64
		want           []byte
	}{
		{"whole", 0, -1, data},
		{"start", 0, 10, data[:10]},
		{"middle", 100, 250, data[100:350]},
		{"end", 990, 10, data[990:]},
		{"tail to end", 990, -1, data[990:]},
		{"length past end", 995, 100, data[995:]},
		{"zero length", 10, 0, nil},
		{"offset at end", 1000, -1, nil},
		{"offset at end zero length", 1000, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := read(t, s, key, tc.offset, tc.length); !bytes.Equal(got, tc.want) {
				t.Errorf("Open(%d, %d) = %d bytes, want %d", tc.offset, tc.length, len(got), len(tc.want))
			}
		})
	}
	for _, off := range []int64{1001, -1} {
		if rc, err := s.Open(t.Context(), key, off, -1); err == nil {
			rc.Close()
			t.Errorf("Open(offset %d) of a 1000-byte object succeeded, want an error", off)
		}
	}
}

func testEmpty(t *testing.T, s blob.Store) {
	const key = "blobs/sha256/empty"
	mustWrite(t, s, key, nil, "application/octet-stream")
	info, err := s.Stat(t.Context(), key)
	if err != nil || info.Size != 0 {
		t.Fatalf("Stat = %+v, %v; want size 0", info, err)
	}
	if got := read(t, s, key, 0, -1); len(got) != 0 {
		t.Errorf("Open(0,-1) = %d bytes", len(got))
	}
	if got := read(t, s, key, 0, 0); len(got) != 0 {
		t.Errorf("Open(0,0) = %d bytes", len(got))
	}
}

func testPutOverwrite(t *testing.T, s blob.Store) {
	ctx := t.Context()
	key, err := blob.TagKey("ns", "dockerhub", "library/nginx", "latest")
	if err != nil {
		t.Fatal(err)
	}
	v1, v2 := []byte(`{"digest":"one"}`), []byte(`{"digest":"second"}`)
	if err := s.Put(ctx, key, v1, "text/one"); err != nil {
		t.Fatal(err)
	}
	assertContent(t, s, key, v1)
	if err := s.Put(ctx, key, v2, "text/two"); err != nil {
		t.Fatal(err)
	}
	assertContent(t, s, key, v2)
	info, err := s.Stat(ctx, key)
	if err != nil || info.Size != int64(len(v2)) || info.ContentType != "text/two" {
		t.Errorf("Stat after overwrite = %+v, %v; want size %d type text/two", info, err, len(v2))
	}
	if got := listKeys(t, s, ""); !slices.Equal(got, []string{key}) {
		t.Errorf("List = %v, want just %s", got, key)
	}
	if err := s.Put(ctx, key, v1, ""); err != nil {
		t.Fatal(err)
	}
	if info, err := s.Stat(ctx, key); err != nil || info.ContentType != blob.DefaultContentType {
		t.Errorf("Stat after Put without a type = %+v, %v; want %s", info, err, blob.DefaultContentType)
	}
}

func testDelete(t *testing.T, s blob.Store) {
	ctx := t.Context()
	const key, putKey = "blobs/sha256/del", "tenants/ns/p/r/_tags/t"
	if err := s.Delete(ctx, key); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}
	mustWrite(t, s, key, Content(100, 3), "x/y")
	if err := s.Put(ctx, putKey, []byte("tag"), "x/z"); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{key, putKey} {
		if err := s.Delete(ctx, k); err != nil {
			t.Fatalf("Delete(%s): %v", k, err)
		}
		if err := s.Delete(ctx, k); err != nil {
			t.Fatalf("second Delete(%s): %v", k, err)
		}
	}
	assertInvisible(t, s, key)
	assertInvisible(t, s, putKey)
	// The key can be written again after a delete.
	mustWrite(t, s, key, []byte("again"), "")
	assertContent(t, s, key, []byte("again"))
}
