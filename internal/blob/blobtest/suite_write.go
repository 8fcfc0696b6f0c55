package blobtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
)

// Sizes chosen to cross S3's 5 MiB minimum part size, so the multipart path
// of the S3 store (and its asynchronous part uploads) is exercised.
const (
	mib       = 1 << 20
	largeSize = 20*mib + 12345
	multiSize = 6*mib + 1
)

func testWrongDigest(t *testing.T, s blob.Store) {
	tests := []struct {
		name string
		size int
	}{
		{"small", 100},
		{"multipart", multiSize},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := Content(tc.size, uint64(20+i))
			want := ExpectFor(Content(tc.size, 99), "") // same size, other bytes
			key := blob.BlobKey(want.Digest)
			if err := write(t, s, key, data, want, 64*1024); !errors.Is(err, blob.ErrVerify) {
				t.Fatalf("Commit error = %v, want ErrVerify", err)
			}
			assertInvisible(t, s, key)
		})
	}
}

func testWrongSize(t *testing.T, s blob.Store) {
	data := Content(1000, 4)
	tests := []struct {
		name  string
		write []byte
		size  int64
	}{
		// The digest is right for data: only the size disagrees.
		{"short", data[:999], 1000},
		{"long", append(bytes.Clone(data), 'x'), 1000},
		{"declared too small", data, 999},
		{"declared too large", data, 1001},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := blob.Expect{Digest: oci.FromBytes(data), Size: tc.size}
			if err := write(t, s, "blobs/sha256/size", tc.write, want, 100); !errors.Is(err, blob.ErrVerify) {
				t.Fatalf("Commit error = %v, want ErrVerify", err)
			}
			assertInvisible(t, s, "blobs/sha256/size")
		})
	}
}

func testUnknownSize(t *testing.T, s blob.Store) {
	data := Content(777, 5)
	want := ExpectFor(data, "")
	want.Size = -1
	if err := write(t, s, "blobs/sha256/unknown", data, want, 100); err != nil {
		t.Fatalf("Commit with size -1: %v", err)
	}
	assertContent(t, s, "blobs/sha256/unknown", data)

	want.Digest = oci.FromBytes([]byte("other"))
	if err := write(t, s, "blobs/sha256/unknown2", data, want, 100); !errors.Is(err, blob.ErrVerify) {
		t.Fatalf("Commit with size -1 and a wrong digest = %v, want ErrVerify", err)
	}
}

func testAbort(t *testing.T, s blob.Store) {
	for _, size := range []int{100, multiSize} {
		ctx := t.Context()
		data := Content(size, 6)
		key := blob.BlobKey(oci.FromBytes(data))
		w, err := s.Create(ctx, key, ExpectFor(data, ""))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := w.Abort(ctx); err != nil {
			t.Fatalf("Abort: %v", err)
		}
		if err := w.Abort(ctx); err != nil {
			t.Fatalf("second Abort: %v", err)
		}
		if err := w.Commit(ctx); err == nil {
			t.Error("Commit after Abort succeeded")
		}
		assertInvisible(t, s, key)
	}
}

func testAbortAfterCommit(t *testing.T, s blob.Store) {
	ctx := t.Context()
	data := Content(500, 7)
	w, err := s.Create(ctx, "blobs/sha256/ac", ExpectFor(data, ""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(ctx); err != nil {
		t.Fatalf("Abort after Commit: %v", err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatalf("second Commit: %v", err)
	}
	assertContent(t, s, "blobs/sha256/ac", data)
}

func testWriteAfterCommit(t *testing.T, s blob.Store) {
	ctx := t.Context()
	data := Content(10, 8)
	w, err := s.Create(ctx, "blobs/sha256/wac", ExpectFor(data, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer abort(t, ctx, w)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("more")); err == nil {
		t.Error("Write after Commit succeeded")
	}
	assertContent(t, s, "blobs/sha256/wac", data)
}

func testCommitCancelled(t *testing.T, s blob.Store) {
	data := Content(100, 9)
	w, err := s.Create(t.Context(), "blobs/sha256/cc", ExpectFor(data, ""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := w.Commit(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Commit with a cancelled context = %v, want context.Canceled", err)
	}
	if err := w.Abort(t.Context()); err != nil {
		t.Errorf("Abort after failed Commit: %v", err)
	}
	assertInvisible(t, s, "blobs/sha256/cc")
}

func testCancelMidWrite(t *testing.T, s blob.Store) {
	data := Content(multiSize, 10)
	key := blob.BlobKey(oci.FromBytes(data))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w, err := s.Create(ctx, key, ExpectFor(data, ""))
	if err != nil {
		t.Fatal(err)
	}
	half := len(data) - 1000 // past the first S3 part
	if _, err := w.Write(data[:half]); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := w.Write(data[half:]); !errors.Is(err, context.Canceled) {
		t.Errorf("Write after cancel = %v, want context.Canceled", err)
	}
	if err := w.Commit(t.Context()); err == nil {
		t.Error("Commit after the write's context was cancelled succeeded")
	}
	if err := w.Abort(context.Background()); err != nil {
		t.Errorf("Abort: %v", err)
	}
	assertInvisible(t, s, key)
}

func testConcurrentWriters(t *testing.T, s blob.Store) {
	data := Content(multiSize, 11)
	want := ExpectFor(data, "application/octet-stream")
	key := blob.BlobKey(want.Digest)
	const writers = 3
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			w, err := s.Create(t.Context(), key, want)
			if err != nil {
				errs[i] = err
				return
			}
			defer abort(t, context.Background(), w)
			// Different chunkings interleave the writers' parts.
			chunk := 100_000 + i*33_333
			for rest := data; len(rest) > 0; {
				n := min(chunk, len(rest))
				if _, err := w.Write(rest[:n]); err != nil {
					errs[i] = err
					return
				}
				rest = rest[n:]
			}
			errs[i] = w.Commit(t.Context())
		})
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, blob.ErrVerify):
			t.Errorf("writer %d: %v", i, err)
		default:
			t.Logf("writer %d lost the race: %v", i, err)
		}
	}
	if ok == 0 {
		t.Fatalf("no concurrent writer succeeded: %v", errs)
	}
	assertContent(t, s, key, data)
}

func testLarge(t *testing.T, s blob.Store) {
	data := Content(largeSize, 12)
	want := ExpectFor(data, "application/vnd.oci.image.layer.v1.tar+gzip")
	key := blob.BlobKey(want.Digest)
	if err := write(t, s, key, data, want, mib+7); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	info, err := s.Stat(t.Context(), key)
	if err != nil || info.Size != int64(len(data)) || info.ContentType != want.ContentType {
		t.Fatalf("Stat = %+v, %v", info, err)
	}
	rc, err := s.Open(t.Context(), key, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	h := sha256.New()
	if n, err := io.Copy(h, rc); err != nil || n != int64(len(data)) {
		t.Fatalf("read %d bytes, %v", n, err)
	}
	if !want.Digest.Matches(h) {
		t.Fatal("large blob read back with a different digest")
	}
	// Ranges across every plausible part boundary.
	for _, off := range []int64{5*mib - 100, 8*mib - 3, 16*mib - 1, largeSize - 10} {
		got := read(t, s, key, off, 200)
		if end := min(off+200, largeSize); !bytes.Equal(got, data[off:end]) {
			t.Errorf("range at %d differs", off)
		}
	}
}

func testSHA512(t *testing.T, s blob.Store) {
	data := Content(3000, 13)
	want := blob.Expect{Digest: sha512Of(data), Size: int64(len(data)), ContentType: "application/octet-stream"}
	key := blob.BlobKey(want.Digest)
	if err := write(t, s, key, data, want, 1000); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	assertContent(t, s, key, data)

	bad := want
	bad.Digest = sha512Of([]byte("other"))
	if err := write(t, s, blob.BlobKey(bad.Digest), data, bad, 1000); !errors.Is(err, blob.ErrVerify) {
		t.Fatalf("Commit with a wrong sha512 = %v, want ErrVerify", err)
	}
	if _, err := s.Stat(t.Context(), blob.BlobKey(bad.Digest)); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat after failed sha512 commit = %v, want ErrNotFound", err)
	}
}

// abort aborts w and reports an error: Abort is safe on an open writer and
// after Commit (blob.Writer's contract), so an error is a bug in the store
// under test.
func abort(t testing.TB, ctx context.Context, w blob.Writer) {
	t.Helper()
	if err := w.Abort(ctx); err != nil {
		t.Errorf("Abort: %v", err)
	}
}
