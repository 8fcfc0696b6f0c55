package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/metrics"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/route"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/blobtest"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream"
)

// switchStore fails every call while broken is set (an unreachable S3).
type switchStore struct {
	blob.Store
	broken atomic.Bool
}

func (s *switchStore) Stat(ctx context.Context, key string) (blob.Info, error) {
	if s.broken.Load() {
		return blob.Info{}, errStorageDown
	}
	return s.Store.Stat(ctx, key)
}

func (s *switchStore) Open(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if s.broken.Load() {
		return nil, errStorageDown
	}
	return s.Store.Open(ctx, key, off, n)
}

func (s *switchStore) Create(ctx context.Context, key string, want blob.Expect) (blob.Writer, error) {
	if s.broken.Load() {
		return nil, errStorageDown
	}
	return s.Store.Create(ctx, key, want)
}

func (s *switchStore) Put(ctx context.Context, key string, data []byte, ct string) error {
	if s.broken.Load() {
		return errStorageDown
	}
	return s.Store.Put(ctx, key, data, ct)
}

type env struct {
	up    *fakeUpstream
	mem   *blobtest.Memory
	store *switchStore
	m     *metrics.Metrics
	c     *Cache
	clock *fakeClock
	// ups is the configuration snapshot every call of the test passes:
	// "test" → up.
	ups Upstreams
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeClock) now() time.Time      { f.mu.Lock(); defer f.mu.Unlock(); return f.t }
func (f *fakeClock) add(d time.Duration) { f.mu.Lock(); f.t = f.t.Add(d); f.mu.Unlock() }

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{up: newFakeUpstream(), mem: blobtest.NewMemory(), m: metrics.New(), clock: &fakeClock{t: time.Unix(1_700_000_000, 0)}}
	e.store = &switchStore{Store: e.mem}
	e.ups = upstreamSet{"test": e.up}
	c, err := New(e.store, "team-a", e.m,
		WithSpoolDir(t.TempDir()), WithTagTTL(time.Minute), WithClock(e.clock.now),
		WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	e.c = c
	return e
}

func (e *env) addBlob(body []byte) oci.Digest {
	d := oci.FromBytes(body)
	e.up.mu.Lock()
	e.up.blobs[d.String()] = body
	e.up.mu.Unlock()
	return d
}

func blobRoute(d oci.Digest) route.Route {
	return route.Route{Kind: route.KindBlob, Prefix: "test", Repository: "app", Digest: d}
}

func tagRoute(tag string) route.Route {
	return route.Route{Kind: route.KindManifest, Prefix: "test", Repository: "app", Tag: tag}
}

func readBlob(ctx context.Context, c *Cache, ups Upstreams, rt route.Route, off, n int64) ([]byte, error) {
	b, err := c.Blob(ctx, ups, rt)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	rc, err := b.Open(ctx, off, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func TestBlobMissThenHit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := blobtest.Content(3<<20, 1)
	d := e.addBlob(body)
	ctx := context.Background()
	got, err := readBlob(ctx, e.c, e.ups, blobRoute(d), 0, -1)
	if err != nil || string(got) != string(body) {
		t.Fatalf("cold read: %d bytes, err %v", len(got), err)
	}
	waitStored(t, e.mem, blob.BlobKey(d))
	got, err = readBlob(ctx, e.c, e.ups, blobRoute(d), 10, 100)
	if err != nil || string(got) != string(body[10:110]) {
		t.Fatalf("warm range read: %v", err)
	}
	if n := e.up.blobGets.Load(); n != 1 {
		t.Fatalf("upstream blob GETs = %d, want 1", n)
	}
	if hits := testutil.ToFloat64(e.m.Hits.WithLabelValues("blob")); hits != 1 {
		t.Fatalf("blob hits = %v, want 1", hits)
	}
}

// TestConcurrentColdReadersShareOneFetch runs in a synctest bubble (fake
// upstream, memory store): synctest.Wait returns once every reader is
// parked on the held-back last byte, and only then the gate opens.
func TestConcurrentColdReadersShareOneFetch(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		body := blobtest.Content(1<<20, 2)
		d := e.addBlob(body)
		gate := make(chan struct{})
		e.up.gate = gate
		open := sync.OnceFunc(func() { close(gate) })
		defer open() // a failed check must not leave the readers blocked in the bubble
		const readers = 50
		var wg sync.WaitGroup
		errs := make(chan error, readers)
		for i := 0; i < readers; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				off := int64(i * 1000)
				got, err := readBlob(context.Background(), e.c, e.ups, blobRoute(d), off, -1)
				if err == nil && string(got) != string(body[off:]) {
					err = errors.New("content differs")
				}
				errs <- err
			}(i)
		}
		synctest.Wait()
		if n := e.up.blobGets.Load(); n != 1 {
			t.Fatalf("upstream blob GETs before the last byte = %d, want 1", n)
		}
		open()
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if n := e.up.blobGets.Load(); n != 1 {
			t.Fatalf("upstream blob GETs = %d, want 1", n)
		}
	})
}

func TestLastByteHeldUntilVerified(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := []byte("0123456789")
	d := e.addBlob(body)
	gate := make(chan struct{})
	e.up.gate = gate
	b, err := e.c.Blob(context.Background(), e.ups, blobRoute(d))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rc, _ := b.Open(context.Background(), 0, -1)
	defer rc.Close()
	buf := make([]byte, 100)
	n, _ := io.ReadAtLeast(rc, buf, 9)
	if n != 9 {
		t.Fatalf("read %d bytes before verification, want 9", n)
	}
	close(gate)
	rest, err := io.ReadAll(rc)
	if err != nil || string(buf[:n])+string(rest) != string(body) {
		t.Fatalf("after verification: %q, %v", rest, err)
	}
}

func TestBadUpstreamBodyNeverStored(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		setup func(e *env) oci.Digest
	}{
		{"wrong digest", func(e *env) oci.Digest {
			d := oci.FromBytes([]byte("the real content"))
			e.up.blobs[d.String()] = []byte("something else!!")
			return d
		}},
		{"short body", func(e *env) oci.Digest {
			body := blobtest.Content(1<<20, 3)
			d := oci.FromBytes(body)
			e.up.blobs[d.String()] = body[:1000]
			e.up.blobSize[d.String()] = int64(len(body))
			return d
		}},
		{"long body", func(e *env) oci.Digest {
			body := blobtest.Content(4096, 4)
			d := oci.FromBytes(body)
			e.up.blobs[d.String()] = append(append([]byte{}, body...), "trailing"...)
			e.up.blobSize[d.String()] = -1
			return d
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			d := tc.setup(e)
			_, err := readBlob(context.Background(), e.c, e.ups, blobRoute(d), 0, -1)
			if err == nil {
				t.Fatal("read of a bad upstream body succeeded")
			}
			waitFillsDone(t, e.c)
			if keys := e.mem.Keys(); len(keys) != 0 {
				t.Fatalf("store holds %v after a bad fill", keys)
			}
		})
	}
}

func TestDisconnectDoesNotCancelFill(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := blobtest.Content(2<<20, 5)
	d := e.addBlob(body)
	gate := make(chan struct{})
	e.up.gate = gate
	ctx, cancel := context.WithCancel(context.Background())
	b, err := e.c.Blob(ctx, e.ups, blobRoute(d))
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := b.Open(ctx, 0, -1)
	_, _ = rc.Read(make([]byte, 1024))
	cancel()
	rc.Close()
	b.Close()
	close(gate)
	waitStored(t, e.mem, blob.BlobKey(d))
}

func TestUpstreamNotFound(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, err := readBlob(context.Background(), e.c, e.ups, blobRoute(oci.FromBytes([]byte("nope"))), 0, -1)
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("err = %v, want upstream 404", err)
	}
}

func waitStored(t *testing.T, s blob.Store, key string) {
	t.Helper()
	testkit.WaitFor(t, key+" visible", 30*time.Second, func() error {
		_, err := s.Stat(context.Background(), key)
		return err
	})
}

func waitFillsDone(t *testing.T, c *Cache) {
	t.Helper()
	testkit.WaitFor(t, "fills done", 30*time.Second, func() error {
		c.fills.mu.Lock()
		n := len(c.fills.m)
		c.fills.mu.Unlock()
		if inFlight := testutil.ToFloat64(c.m.FillsInFlight); n != 0 || inFlight != 0 {
			return fmt.Errorf("%d fills registered, %v in flight", n, inFlight)
		}
		return nil
	})
}

// TestWaitFills: WaitFills returns only once a background fill has
// committed, even after every client let go of it, and gives up when its
// context ends.
func TestWaitFills(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if err := e.c.WaitFills(t.Context()); err != nil {
		t.Fatalf("no fills: %v", err)
	}
	body := []byte("0123456789")
	d := e.addBlob(body)
	gate := make(chan struct{})
	e.up.gate = gate
	b, err := e.c.Blob(context.Background(), e.ups, blobRoute(d))
	if err != nil {
		t.Fatal(err)
	}
	b.Close() // the client went away; the fill runs on
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.c.WaitFills(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitFills with a fill held: %v", err)
	}
	close(gate)
	if err := e.c.WaitFills(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.mem.Stat(context.Background(), blob.BlobKey(d)); err != nil {
		t.Fatalf("not stored when WaitFills returned: %v", err)
	}
}

// TestBlobSizeNeverFills: a HEAD of an uncached blob asks the upstream
// with HEAD and stores nothing; once cached, it is answered from storage.
func TestBlobSizeNeverFills(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	body := []byte("head me, do not fetch me")
	d := e.addBlob(body)
	size, source, err := e.c.BlobSize(ctx, e.ups, blobRoute(d))
	if err != nil || size != int64(len(body)) || source != "upstream" {
		t.Fatalf("uncached: %d %s %v", size, source, err)
	}
	if e.up.blobHeads.Load() != 1 || e.up.blobGets.Load() != 0 {
		t.Fatalf("uncached HEAD: %d upstream HEADs, %d GETs", e.up.blobHeads.Load(), e.up.blobGets.Load())
	}
	waitFillsDone(t, e.c)
	if _, err := e.mem.Stat(ctx, blob.BlobKey(d)); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("a HEAD stored the blob: %v", err)
	}
	if _, err := readBlob(ctx, e.c, e.ups, blobRoute(d), 0, -1); err != nil {
		t.Fatal(err)
	}
	waitStored(t, e.mem, blob.BlobKey(d))
	if size, source, err := e.c.BlobSize(ctx, e.ups, blobRoute(d)); err != nil || size != int64(len(body)) || source != "cache" || e.up.blobHeads.Load() != 1 {
		t.Fatalf("cached: %d %s %v, %d upstream HEADs", size, source, err, e.up.blobHeads.Load())
	}
	if _, _, err := e.c.BlobSize(ctx, e.ups, blobRoute(oci.FromBytes([]byte("absent")))); !errors.Is(err, upstream.ErrNotFound) {
		t.Fatalf("unknown blob: %v", err)
	}
}
