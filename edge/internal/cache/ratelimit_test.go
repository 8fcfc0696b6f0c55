package cache

import (
	"context"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/blobtest"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
)

func TestTokenBucket(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1_700_000_000, 0)
	type step struct {
		at       time.Duration // since t0
		ok       bool
		wantWait time.Duration // when refused
	}
	tests := []struct {
		name        string
		rate, burst int
		steps       []step
	}{
		{"unlimited", 0, 0, []step{{0, true, 0}, {0, true, 0}, {0, true, 0}}},
		{"burst then refused", 2, 3, []step{{0, true, 0}, {0, true, 0}, {0, true, 0}, {0, false, 500 * time.Millisecond}}},
		{"refills at the rate", 2, 1, []step{{0, true, 0}, {0, false, 500 * time.Millisecond},
			{250 * time.Millisecond, false, 250 * time.Millisecond}, {500 * time.Millisecond, true, 0}}},
		{"never above the burst", 10, 2, []step{{0, true, 0}, {0, true, 0}, {time.Hour, true, 0}, {time.Hour, true, 0},
			{time.Hour, false, 100 * time.Millisecond}}},
		{"burst 0 is one second's worth", 3, 0, []step{{0, true, 0}, {0, true, 0}, {0, true, 0}, {0, false, time.Second / 3}}},
		{"a slow rate tells a long wait", 1, 1, []step{{0, true, 0}, {0, false, time.Second}}},
		{"a clock going back takes nothing", 1, 1, []step{{time.Second, true, 0}, {0, false, time.Second}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var b tokenBucket
			b.set(tc.rate, tc.burst)
			for i, s := range tc.steps {
				ok, wait := b.take(t0.Add(s.at))
				if ok != s.ok || (!ok && (wait-s.wantWait).Abs() > time.Millisecond) {
					t.Fatalf("step %d at %s: ok %v wait %s, want %v %s", i, s.at, ok, wait, s.ok, s.wantWait)
				}
			}
		})
	}
}

func TestTokenBucketSetKeepsUnchangedState(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1_700_000_000, 0)
	var b tokenBucket
	b.set(1, 1)
	if ok, _ := b.take(t0); !ok {
		t.Fatal("first token refused")
	}
	// The same configuration again (every push re-applies the policy)
	// must not refill the bucket.
	b.set(1, 1)
	if ok, _ := b.take(t0); ok {
		t.Fatal("re-applying the same limits refilled the bucket")
	}
	// A different limit starts full.
	b.set(1, 2)
	if ok, _ := b.take(t0); !ok {
		t.Fatal("a new limit did not start full")
	}
}

// throttled asserts err is a *ThrottledError of reason.
func throttled(t *testing.T, what string, err error, reason string) *ThrottledError {
	t.Helper()
	var te *ThrottledError
	if !errors.As(err, &te) || !errors.Is(err, ErrThrottled) || te.Reason != reason || te.RetryAfter <= 0 {
		t.Fatalf("%s: %v, want a %s ThrottledError", what, err, reason)
	}
	return te
}

// TestRateLimitOnlyUpstream: with a bucket of 2, cold requests beyond it
// are refused for every kind of upstream request, while cached blobs,
// fresh tags and stale tags (revalidation refused) are served.
func TestRateLimitOnlyUpstream(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.c.SetUpstreamRate(1, 2)
	cached := e.addBlob(blobtest.Content(4096, 30))
	cold := e.addBlob(blobtest.Content(4096, 31))
	e.up.setTag("v1", manifestBody("v1"))

	// Two tokens: a blob and a tag.
	if _, err := readBlob(ctx, e.c, e.ups, blobRoute(cached), 0, -1); err != nil {
		t.Fatal(err)
	}
	waitStored(t, e.mem, blob.BlobKey(cached))
	if _, err := e.c.Manifest(ctx, e.ups, tagRoute("v1")); err != nil {
		t.Fatal(err)
	}

	refusals := []struct {
		name string
		call func() error
	}{
		{"cold blob GET", func() error { _, err := readBlob(ctx, e.c, e.ups, blobRoute(cold), 0, -1); return err }},
		{"cold blob HEAD", func() error { _, _, err := e.c.BlobSize(ctx, e.ups, blobRoute(cold)); return err }},
		{"cold manifest", func() error { _, err := e.c.Manifest(ctx, e.ups, tagRoute("other")); return err }},
		{"tag list", func() error { _, err := e.c.Tags(ctx, e.ups, tagRoute("v1"), url.Values{}); return err }},
	}
	for _, r := range refusals {
		te := throttled(t, r.name, r.call(), ThrottleRate)
		if te.RetryAfter > time.Second {
			t.Errorf("%s: retry after %s at 1 request per second", r.name, te.RetryAfter)
		}
	}
	hits := []struct {
		name string
		call func() error
	}{
		{"cached blob", func() error { _, err := readBlob(ctx, e.c, e.ups, blobRoute(cached), 0, -1); return err }},
		{"cached blob HEAD", func() error { _, _, err := e.c.BlobSize(ctx, e.ups, blobRoute(cached)); return err }},
		{"fresh tag", func() error { _, err := e.c.Manifest(ctx, e.ups, tagRoute("v1")); return err }},
	}
	for i := 0; i < 3; i++ {
		for _, h := range hits {
			if err := h.call(); err != nil {
				t.Fatalf("%s refused while the bucket is empty: %v", h.name, err)
			}
		}
	}
	// A stale tag whose revalidation is refused is served stale.
	e.clock.add(2 * time.Minute)
	e.c.SetUpstreamRate(1, 3) // a new limit starts full: use it up
	for i := 0; i < 3; i++ {
		if _, err := e.c.Tags(ctx, e.ups, tagRoute("v1"), url.Values{}); err != nil {
			t.Fatal(err)
		}
	}
	m, err := e.c.Manifest(ctx, e.ups, tagRoute("v1"))
	if err != nil || !m.Stale {
		t.Fatalf("stale tag with the bucket empty: %+v, %v", m, err)
	}
	if n := testutil.ToFloat64(e.m.UpstreamThrottled.WithLabelValues(ThrottleRate)); n < float64(len(refusals)+1) {
		t.Errorf("throttled count %v, want at least %d", n, len(refusals)+1)
	}
	// Once a token is back the cold blob is fetched.
	e.clock.add(time.Second)
	if _, err := readBlob(ctx, e.c, e.ups, blobRoute(cold), 0, -1); err != nil {
		t.Fatalf("cold blob after the wait: %v", err)
	}
}

// TestFillQueueWaitThrottles: with every fill slot busy, a cold blob's
// requests get a fills ThrottledError after the queue wait instead of
// waiting for the running fill; nothing of the refused blob is fetched.
func TestFillQueueWaitThrottles(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.c.fillWait = 50 * time.Millisecond
	e.c.SetMaxFills(1)
	gate := make(chan struct{})
	e.up.gate = gate
	first, second := e.addBlob(blobtest.Content(4096, 40)), e.addBlob(blobtest.Content(4096, 41))
	done := make(chan error, 1)
	go func() { _, err := readBlob(context.Background(), e.c, e.ups, blobRoute(first), 0, -1); done <- err }()
	testkit.WaitFor(t, "first fill", 30*time.Second, func() bool { return e.up.blobGets.Load() == 1 })

	_, err := readBlob(context.Background(), e.c, e.ups, blobRoute(second), 0, -1)
	te := throttled(t, "second blob", err, ThrottleFills)
	if te.RetryAfter != e.c.fillWait {
		t.Errorf("retry after %s, want the queue wait %s", te.RetryAfter, e.c.fillWait)
	}
	if n := e.up.blobGets.Load(); n != 1 {
		t.Errorf("%d upstream GETs, want only the running fill's", n)
	}
	if n := testutil.ToFloat64(e.m.UpstreamThrottled.WithLabelValues(ThrottleFills)); n != 1 {
		t.Errorf("fills throttled %v, want 1", n)
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// With the slot free, the refused blob is fetched on the next request.
	if _, err := readBlob(context.Background(), e.c, e.ups, blobRoute(second), 0, -1); err != nil {
		t.Fatal(err)
	}
	waitFillsDone(t, e.c)
}
