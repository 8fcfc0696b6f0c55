package cache

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/blobtest"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream"
)

// ttlSet is an Upstreams with per-upstream tag TTLs.
type ttlSet struct {
	upstreamSet
	ttl map[string]time.Duration
}

func (s ttlSet) TagTTL(p string) (time.Duration, bool) { d, ok := s.ttl[p]; return d, ok }

// TestMaxFillsBoundsUpstreamTransfers runs in a synctest bubble (the
// fake upstream and the memory store do no I/O): synctest.Wait returns
// once every fill is either transferring or queued, so "no third
// transfer" is checked, not hoped for after a sleep.
func TestMaxFillsBoundsUpstreamTransfers(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		e.c.SetMaxFills(2)
		gate := make(chan struct{})
		e.up.gate = gate
		open := sync.OnceFunc(func() { close(gate) })
		defer open() // a failed check must not leave the readers blocked in the bubble
		var digests []oci.Digest
		for i := 0; i < 5; i++ {
			digests = append(digests, e.addBlob(blobtest.Content(64<<10, uint64(10+i))))
		}
		errs := make(chan error, len(digests))
		for _, d := range digests {
			go func() {
				_, err := readBlob(context.Background(), e.c, e.ups, blobRoute(d), 0, -1)
				errs <- err
			}()
		}
		synctest.Wait()
		if n := e.up.blobGets.Load(); n != 2 {
			t.Fatalf("%d upstream transfers with a limit of 2", n)
		}
		if n := testutil.ToFloat64(e.m.FillsInFlight); n != 2 {
			t.Fatalf("fills in flight %v", n)
		}
		// Raising the limit (0: unlimited) starts the waiting fills at once.
		e.c.SetMaxFills(0)
		synctest.Wait()
		if n := e.up.blobGets.Load(); n != 5 {
			t.Fatalf("%d upstream transfers after lifting the limit, want 5", n)
		}
		open()
		for range digests {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestMaxFillsWaiterRespectsContext(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.c.SetMaxFills(1)
	gate := make(chan struct{})
	e.up.gate = gate
	first, second := e.addBlob(blobtest.Content(4096, 20)), e.addBlob(blobtest.Content(4096, 21))
	go func() { _, _ = readBlob(context.Background(), e.c, e.ups, blobRoute(first), 0, -1) }()
	testkit.WaitFor(t, "first fill", 30*time.Second, func() bool { return e.up.blobGets.Load() == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := readBlob(ctx, e.c, e.ups, blobRoute(second), 0, -1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting request: %v, want its deadline", err)
	}
	// The queued fill is detached from the request that gave up (a client
	// that goes away never cancels a fill): once a slot frees, it runs and
	// caches the blob.
	close(gate)
	waitStored(t, e.mem, blob.BlobKey(second))
	waitFillsDone(t, e.c)
}

func TestFillLimiter(t *testing.T) {
	t.Parallel()
	var l fillLimiter
	l.setLimit(1)
	if err := l.acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.acquire(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("acquire beyond the limit with a done context: %v", err)
	}
	// In a bubble, synctest.Wait returns once the second acquire is
	// parked (or done): it must be parked.
	synctest.Test(t, func(t *testing.T) {
		got := make(chan error, 1)
		go func() { got <- l.acquire(context.Background()) }()
		synctest.Wait()
		select {
		case err := <-got:
			t.Fatalf("acquired beyond the limit (err %v)", err)
		default:
		}
		l.release()
		if err := <-got; err != nil {
			t.Fatal(err)
		}
	})
	l.release()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.active != 0 || len(l.waiters) != 0 {
		t.Fatalf("leaked: active %d waiters %d", l.active, len(l.waiters))
	}
}

func TestPerUpstreamTagTTL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		ttl       map[string]time.Duration
		wantHeads int64
	}{
		{"edge default 1m", nil, 1},
		{"upstream 10m", map[string]time.Duration{"test": 10 * time.Minute}, 0},
		{"other upstream's ttl", map[string]time.Duration{"other": 10 * time.Minute}, 1},
		{"upstream 0: always revalidate", map[string]time.Duration{"test": 0}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.up.setTag("v1", []byte(`{"schemaVersion":2}`))
			ctx, ups := context.Background(), ttlSet{upstreamSet{"test": e.up}, tc.ttl}
			if _, err := e.c.Manifest(ctx, ups, tagRoute("v1")); err != nil {
				t.Fatal(err)
			}
			e.clock.add(2 * time.Minute)
			if _, err := e.c.Manifest(ctx, ups, tagRoute("v1")); err != nil {
				t.Fatal(err)
			}
			if n := e.up.manifestHeads.Load(); n != tc.wantHeads {
				t.Fatalf("HEADs = %d, want %d", n, tc.wantHeads)
			}
		})
	}
}

// TestCallsUseTheGivenSnapshot: every call reaches the upstreams of the
// snapshot it is given and no other; a snapshot without the prefix is an
// unknown upstream and no snapshot at all is ErrNoSnapshot, never a
// fallback to another configuration.
func TestCallsUseTheGivenSnapshot(t *testing.T) {
	t.Parallel()
	e := newEnv(t) // e.ups: "test" → e.up
	pinned := newFakeUpstream()
	pinned.setTag("v1", []byte(`{"schemaVersion":2,"pinned":true}`))
	ctx, ups := context.Background(), upstreamSet{"test": pinned}
	if _, err := e.c.Manifest(ctx, ups, tagRoute("v1")); err != nil {
		t.Fatal(err)
	}
	d := oci.FromBytes([]byte("pinned blob"))
	pinned.blobs[d.String()] = []byte("pinned blob")
	if _, err := readBlob(ctx, e.c, ups, blobRoute(d), 0, -1); err != nil {
		t.Fatal(err)
	}
	if e.up.manifestGets.Load()+e.up.blobGets.Load() != 0 || pinned.manifestGets.Load() != 1 || pinned.blobGets.Load() != 1 {
		t.Fatal("cache did not use the given upstreams")
	}
	cold, absent := tagRoute("v2"), blobRoute(oci.FromBytes([]byte("absent")))
	for _, tc := range []struct {
		name string
		ups  Upstreams
		want error
	}{
		{"snapshot without the prefix", upstreamSet{}, ErrUnknownUpstream},
		{"no snapshot", nil, ErrNoSnapshot},
	} {
		calls := map[string]func() error{
			"manifest":  func() error { _, err := e.c.Manifest(ctx, tc.ups, cold); return err },
			"blob":      func() error { _, err := readBlob(ctx, e.c, tc.ups, absent, 0, -1); return err },
			"blob HEAD": func() error { _, _, err := e.c.BlobSize(ctx, tc.ups, absent); return err },
			"tags":      func() error { _, err := e.c.Tags(ctx, tc.ups, cold, nil); return err },
		}
		for call, fn := range calls {
			if err := fn(); !errors.Is(err, tc.want) {
				t.Errorf("%s, %s: err = %v, want %v", tc.name, call, err, tc.want)
			}
		}
	}
}

func TestInvalidateTag(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.up.setTag("latest", []byte(`{"schemaVersion":2}`))
	ctx := context.Background()
	if _, err := e.c.Manifest(ctx, e.ups, tagRoute("latest")); err != nil {
		t.Fatal(err)
	}
	key, _ := blob.TagKey("team-a", "test", "app", "latest")
	if _, err := e.mem.Stat(ctx, key); err != nil {
		t.Fatalf("tag record not stored: %v", err)
	}
	if err := e.c.InvalidateTag(ctx, "test", "app", "latest"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.mem.Stat(ctx, key); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("tag record still there: %v", err)
	}
	if _, err := e.c.Manifest(ctx, e.ups, tagRoute("latest")); err != nil || e.up.manifestGets.Load() != 2 {
		t.Fatalf("next pull did not refetch: gets %d, err %v", e.up.manifestGets.Load(), err)
	}
	// Idempotent, and bad names never reach the store.
	if err := e.c.InvalidateTag(ctx, "test", "app", "latest"); err != nil {
		t.Fatal(err)
	}
	if err := e.c.InvalidateTag(ctx, "../x", "app", "latest"); !errors.Is(err, blob.ErrInvalidKey) {
		t.Fatalf("bad prefix: %v", err)
	}
}

var _ TagTTLs = ttlSet{}
var _ Upstreams = upstreamSet(map[string]upstream.Fetcher{})
