package brokerstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/blobtest"
	s3store "github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/s3"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/s3/s3test"
)

// scoped adds a pull scope to every call, as the cache does.
type scoped struct{ *Store }

func (s scoped) ctx(ctx context.Context) context.Context {
	return blob.WithScope(ctx, "test", "org/app")
}

func (s scoped) Stat(ctx context.Context, key string) (blob.Info, error) {
	return s.Store.Stat(s.ctx(ctx), key)
}

func (s scoped) Open(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	return s.Store.Open(s.ctx(ctx), key, off, n)
}

func (s scoped) Create(ctx context.Context, key string, want blob.Expect) (blob.Writer, error) {
	return s.Store.Create(s.ctx(ctx), key, want)
}

func (s scoped) Put(ctx context.Context, key string, data []byte, ct string) error {
	return s.Store.Put(s.ctx(ctx), key, data, ct)
}

func TestConformance(t *testing.T) {
	t.Parallel()
	blobtest.Run(t, func(t *testing.T) blob.Store {
		_, s := startBroker(t)
		return scoped{s}
	})
}

// TestConformanceS3 runs the suite with the broker over the S3 store
// against versitygw: reads go to real presigned URLs, with real Range and
// 416 answers.
func TestConformanceS3(t *testing.T) {
	t.Parallel()
	endpoint, bucket, access, secret := s3test.Start(t)
	client := s3test.Client(endpoint, access, secret)
	var n atomic.Int64
	blobtest.Run(t, func(t *testing.T) blob.Store {
		st, err := s3store.New(client, bucket, fmt.Sprintf("store-%d", n.Add(1)), s3store.WithPartSize(s3store.MinPartSize))
		if err != nil {
			t.Fatal(err)
		}
		_, s := serveBroker(t, st, &http.Client{})
		return scoped{s}
	})
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func put(t *testing.T, ctx context.Context, s *Store, data []byte) string {
	t.Helper()
	want := blobtest.ExpectFor(data, "application/octet-stream")
	key := blob.BlobKey(want.Digest)
	w, err := s.Create(ctx, key, want)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		// A no-op after Commit; it discards the bytes after a failed one.
		if err := w.Abort(ctx); err != nil {
			t.Errorf("Abort: %v", err)
		}
	}()
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return key
}

func readAll(t *testing.T, ctx context.Context, s *Store, key string, off, n int64) string {
	t.Helper()
	rc, err := s.Open(ctx, key, off, n)
	if err != nil {
		t.Fatalf("Open(%s, %d, %d): %v", key, off, n, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestGrantsAreReusedBriefly: one Authorize serves Stat and Opens of the
// same object in the same scope for a minute at most; another scope is
// another decision; a write drops the grant.
func TestGrantsAreReusedBriefly(t *testing.T) {
	t.Parallel()
	clk := &clock{t: time.Now()}
	b, s := startBroker(t, WithClock(clk.now))
	ctx := blob.WithScope(t.Context(), "test", "org/app")
	key := put(t, ctx, s, []byte("hello, world"))
	if _, err := s.Stat(ctx, key); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, ctx, s, key, 7, 5); got != "world" {
		t.Fatalf("range = %q", got)
	}
	if got := readAll(t, ctx, s, key, 0, -1); got != "hello, world" {
		t.Fatalf("whole = %q", got)
	}
	if n := b.Authorizes(); n != 1 {
		t.Fatalf("Authorize calls = %d, want 1", n)
	}
	if _, err := s.Stat(blob.WithScope(t.Context(), "test", "org/other"), key); err != nil {
		t.Fatal(err)
	}
	if n := b.Authorizes(); n != 2 {
		t.Fatalf("Authorize calls after another scope = %d, want 2", n)
	}
	clk.add(DefaultGrantTTL)
	if _, err := s.Stat(ctx, key); err != nil {
		t.Fatal(err)
	}
	if n := b.Authorizes(); n != 3 {
		t.Fatalf("Authorize calls after a minute = %d, want 3", n)
	}
	tag := "tenants/team-a/test/org/app/_tags/v1"
	if err := s.Put(ctx, tag, []byte(`{"digest":"a"}`), "application/json"); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, ctx, s, tag, 0, -1); got != `{"digest":"a"}` {
		t.Fatalf("record = %q", got)
	}
	if err := s.Put(ctx, tag, []byte(`{"digest":"bb"}`), "application/json"); err != nil {
		t.Fatal(err)
	}
	if info, err := s.Stat(ctx, tag); err != nil || info.Size != int64(len(`{"digest":"bb"}`)) {
		t.Fatalf("Stat after overwrite = %+v, %v (a stale grant?)", info, err)
	}
	if s.grants.len() > 3 {
		t.Fatalf("%d grants kept", s.grants.len())
	}
}

// TestExpiredURLIsAuthorizedAgain: a 403 from the storage (an expired
// presigned URL) drops the grant and retries once with a fresh one.
func TestExpiredURLIsAuthorizedAgain(t *testing.T) {
	t.Parallel()
	b, s := startBroker(t)
	ctx := blob.WithScope(t.Context(), "test", "org/app")
	key := put(t, ctx, s, []byte("layer"))
	if got := readAll(t, ctx, s, key, 0, -1); got != "layer" {
		t.Fatalf("read = %q", got)
	}
	b.storage.Revoke()
	if got := readAll(t, ctx, s, key, 1, 3); got != "aye" {
		t.Fatalf("read after expiry = %q", got)
	}
	if n := b.Authorizes(); n != 2 {
		t.Fatalf("Authorize calls = %d, want 2", n)
	}
}

// TestRefusalsAndFaults maps the broker's answers onto the blob sentinels.
func TestRefusalsAndFaults(t *testing.T) {
	t.Parallel()
	b, s := startBroker(t)
	allowed := blob.WithScope(t.Context(), "test", "org/app")
	key := put(t, allowed, s, []byte("shared layer"))
	b.Deny("test", "org/secret")
	denied := blob.WithScope(t.Context(), "test", "org/secret")

	if _, err := s.Stat(denied, key); !errors.Is(err, blob.ErrDenied) {
		t.Fatalf("Stat in a refused scope = %v, want ErrDenied", err)
	}
	if _, err := s.Open(denied, key, 0, -1); !errors.Is(err, blob.ErrDenied) {
		t.Fatalf("Open in a refused scope = %v, want ErrDenied", err)
	}
	data := []byte("another layer")
	want := blobtest.ExpectFor(data, "")
	w, err := s.Create(denied, blob.BlobKey(want.Digest), want)
	if err == nil {
		_, _ = w.Write(data)
		if err = w.Verify(); err != nil {
			t.Fatalf("Verify of the right bytes: %v", err)
		}
		err = w.Commit(denied)
		_ = w.Abort(denied)
	}
	if !errors.Is(err, blob.ErrDenied) {
		t.Fatalf("write in a refused scope = %v, want ErrDenied", err)
	}
	if _, err := b.storage.Stat(t.Context(), blob.BlobKey(want.Digest)); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("refused write stored: %v", err)
	}

	before := b.Authorizes()
	if _, err := s.Stat(t.Context(), key); !errors.Is(err, blob.ErrDenied) || b.Authorizes() != before {
		t.Fatalf("Stat of a shared key without a scope = %v (%d RPCs), want ErrDenied without asking", err, b.Authorizes()-before)
	}
	if _, err := s.Stat(t.Context(), "tenants/team-a/health.probe"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Stat of a missing record without a scope = %v, want ErrNotFound", err)
	}

	b.SetDown(true)
	for _, err := range []error{
		func() error { _, err := s.Stat(allowed, "blobs/sha256/other"); return err }(),
		s.Put(allowed, "tenants/team-a/x", []byte("{}"), ""),
		s.Delete(allowed, "tenants/team-a/x"),
		s.List(allowed, "tenants/team-a/", func(string, blob.Info) error { return nil }),
	} {
		if err == nil || errors.Is(err, blob.ErrDenied) || errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("broker down: %v, want a plain error (a storage fault)", err)
		}
	}
	if !slices.Contains(b.Scopes(), "test/org/app") || slices.Contains(b.Scopes(), "/") {
		t.Fatalf("scopes seen by the broker: %v", b.Scopes())
	}
}

// TestWriterVerifiesAndCopies: Verify answers before Commit, a wrong
// digest never reaches the broker as a commit, and the caller's buffer may
// be reused as soon as Write returns.
func TestWriterVerifiesAndCopies(t *testing.T) {
	t.Parallel()
	b, s := startBroker(t)
	ctx := blob.WithScope(t.Context(), "test", "org/app")
	data := blobtest.Content(3*chunkSize+17, 1)
	want := blobtest.ExpectFor(data, "")
	key := blob.BlobKey(want.Digest)
	w, err := s.Create(ctx, key, want)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100_000)
	for rest := data; len(rest) > 0; {
		n := copy(buf, rest)
		if _, err := w.Write(buf[:n]); err != nil {
			t.Fatal(err)
		}
		clear(buf) // reused at once, as the fill does
		rest = rest[n:]
	}
	if err := w.Verify(); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, ctx, s, key, 0, -1); got != string(data) {
		t.Fatal("stored content differs")
	}

	bad := want
	bad.Digest = blobtest.ExpectFor([]byte("x"), "").Digest
	w, err = s.Create(ctx, blob.BlobKey(bad.Digest), bad)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		// A no-op after Commit; it discards the bytes after a failed one.
		if err := w.Abort(ctx); err != nil {
			t.Errorf("Abort: %v", err)
		}
	}()
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Verify(); !errors.Is(err, blob.ErrVerify) {
		t.Fatalf("Verify of wrong bytes = %v", err)
	}
	if err := w.Commit(ctx); !errors.Is(err, blob.ErrVerify) {
		t.Fatalf("Commit of wrong bytes = %v", err)
	}
	if _, err := b.storage.Stat(t.Context(), blob.BlobKey(bad.Digest)); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("wrong bytes stored: %v", err)
	}
}

// TestURLNeverInErrors: a failing read names the key, not the URL.
func TestURLNeverInErrors(t *testing.T) {
	t.Parallel()
	b, s := startBroker(t)
	ctx := blob.WithScope(t.Context(), "test", "org/app")
	key := put(t, ctx, s, []byte("layer"))
	if _, err := s.Stat(ctx, key); err != nil {
		t.Fatal(err)
	}
	b.storage.Close()
	_, err := s.Open(ctx, key, 0, -1)
	if err == nil || strings.Contains(err.Error(), "sig=") || strings.Contains(err.Error(), b.storage.URL()) || !strings.Contains(err.Error(), key) {
		t.Fatalf("Open with the storage gone: %v", err)
	}
}

func TestRPCErrorMapping(t *testing.T) {
	t.Parallel()
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		err     error
		want    error
		notWant []error
	}{
		{"permission denied", t.Context(), refusal(codes.PermissionDenied, "NO_PROOF", "no"), blob.ErrDenied, nil},
		{"not found", t.Context(), status.Error(codes.NotFound, "no"), blob.ErrNotFound, nil},
		{"digest mismatch", t.Context(), refusal(codes.InvalidArgument, reasonDigestMismatch, "bad"), blob.ErrVerify, []error{blob.ErrDenied}},
		{"invalid key", t.Context(), refusal(codes.InvalidArgument, "INVALID_KEY", "bad"), blob.ErrDenied, []error{blob.ErrVerify}},
		{"cancelled by the caller", cancelled, status.Error(codes.Canceled, "gone"), context.Canceled, nil},
		{"unavailable", t.Context(), status.Error(codes.Unavailable, "down"), nil, []error{blob.ErrDenied, blob.ErrNotFound, blob.ErrVerify}},
		{"deadline", t.Context(), status.Error(codes.DeadlineExceeded, "slow"), nil, []error{blob.ErrDenied, blob.ErrNotFound, context.DeadlineExceeded}},
		{"unauthenticated", t.Context(), status.Error(codes.Unauthenticated, "token"), nil, []error{blob.ErrDenied}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := rpcErr(tc.ctx, "stat", "blobs/sha256/x", tc.err)
			if tc.want != nil && !errors.Is(got, tc.want) {
				t.Errorf("rpcErr = %v, want %v", got, tc.want)
			}
			for _, nw := range tc.notWant {
				if errors.Is(got, nw) {
					t.Errorf("rpcErr = %v, must not be %v", got, nw)
				}
			}
			if !strings.Contains(got.Error(), "blobs/sha256/x") {
				t.Errorf("rpcErr = %v does not name the key", got)
			}
		})
	}
}
