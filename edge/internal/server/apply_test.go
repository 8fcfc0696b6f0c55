package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/cache"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/metrics"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/registry"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/route"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/blobtest"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

type edgeParts struct {
	set     *upstreamSet
	cache   *cache.Cache
	mem     *blobtest.Memory
	applier *configApplier
	handler http.Handler
	metrics *metrics.Metrics
}

// newParts wires the pieces Run wires, over a memory store, starting on
// the default upstreams.
func newParts(t *testing.T) *edgeParts {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	table, err := route.NewTable(route.Defaults())
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	px := newProxies(m, log, 0)
	snap, err := flagSnapshot(table, nil, nil, nil, px, log)
	if err != nil {
		t.Fatal(err)
	}
	p := &edgeParts{set: &upstreamSet{}, mem: blobtest.NewMemory(), metrics: m}
	p.set.cur.Store(snap)
	if p.cache, err = cache.New(p.mem, "team-a", m, cache.WithSpoolDir(t.TempDir()), cache.WithLogger(log)); err != nil {
		t.Fatal(err)
	}
	p.applier = &configApplier{set: p.set, fills: p.cache, proxies: px, log: log}
	p.handler = registry.New(p.set, p.cache, m, log)
	return p
}

// TestApplyAtomicUnderLoad swaps configurations while requests run: every
// request is answered whole by one of the two upstreams, never fails, and
// the race detector sees no unsynchronised access.
func TestApplyAtomicUnderLoad(t *testing.T) {
	t.Parallel()
	p := newParts(t)
	upA, upB := newUpstream(t, "from-a"), newUpstream(t, "from-b")
	cfgA, cfgB := snapshot("a", upA, nil), snapshot("b", upB, &selfhostv1.NamespacePolicy{MaxConcurrentFills: 2})
	if err := p.applier.Apply(cfgA); err != nil {
		t.Fatal(err)
	}
	edge := httptest.NewServer(p.handler)
	t.Cleanup(edge.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	var requests, fromA, fromB atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				resp, err := http.Get(edge.URL + "/v2/test/org/app/tags/list")
				if err != nil {
					errs <- err
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				requests.Add(1)
				switch {
				case resp.StatusCode != 200:
					errs <- errors.New("status " + resp.Status + ": " + string(body))
					return
				case strings.Contains(string(body), "from-a") && !strings.Contains(string(body), "from-b"):
					fromA.Add(1)
				case strings.Contains(string(body), "from-b") && !strings.Contains(string(body), "from-a"):
					fromB.Add(1)
				default:
					errs <- errors.New("mixed answer " + string(body))
					return
				}
			}
		}()
	}
	applies := 0
	for ctx.Err() == nil {
		next := cfgB
		if applies%2 == 1 {
			next = cfgA
		}
		if err := p.applier.Apply(next); err != nil {
			t.Fatal(err)
		}
		applies++
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if fromA.Load() == 0 || fromB.Load() == 0 {
		t.Fatalf("%d requests over %d swaps: %d from A, %d from B", requests.Load(), applies, fromA.Load(), fromB.Load())
	}
}

func TestApplyRejectsAndKeepsSnapshot(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, field string
		mutate      func(*selfhostv1.EdgeConfig)
	}{
		{"alias collides", "upstreams", func(c *selfhostv1.EdgeConfig) { c.Upstreams[1].Aliases = []string{"test"} }},
		{"bad prefix", "upstreams", func(c *selfhostv1.EdgeConfig) { c.Upstreams[0].Prefix = "Te/st" }},
		{"url with path", "upstreams[0]", func(c *selfhostv1.EdgeConfig) { c.Upstreams[0].Url = "http://x/?q" }},
		{"allowed alias", "policy.allowed_prefixes[0]", func(c *selfhostv1.EdgeConfig) {
			c.Upstreams[1].Aliases = []string{"gh"}
			c.Policy = &selfhostv1.NamespacePolicy{AllowedPrefixes: []string{"gh"}}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := newParts(t)
			if err := p.applier.Apply(snapshot("v1", "http://127.0.0.1:1", nil)); err != nil {
				t.Fatal(err)
			}
			before := p.set.cur.Load()
			bad := snapshot("v2", "http://127.0.0.1:1", nil)
			tc.mutate(bad)
			err := p.applier.Apply(bad)
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("err = %v, want one naming %q", err, tc.field)
			}
			if p.set.cur.Load() != before {
				t.Fatal("snapshot replaced by a rejected config")
			}
		})
	}
}

func TestApplyReusesUnchangedClients(t *testing.T) {
	t.Parallel()
	p := newParts(t)
	cfg := snapshot("v1", "http://127.0.0.1:1", nil)
	cfg.Upstreams[0].Credentials = &selfhostv1.Credentials{Username: "u", Password: "p1"}
	if err := p.applier.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	test1, _ := p.set.cur.Load().Fetcher("test")
	ghcr1, _ := p.set.cur.Load().Fetcher("ghcr")
	cfg.Version, cfg.Upstreams[0].Credentials.Password = "v2", "p2"
	if err := p.applier.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	test2, _ := p.set.cur.Load().Fetcher("test")
	ghcr2, _ := p.set.cur.Load().Fetcher("ghcr")
	if ghcr1 != ghcr2 {
		t.Fatal("unchanged upstream got a new client")
	}
	if test1 == test2 {
		t.Fatal("upstream with new credentials kept its old client")
	}
	if ttl, ok := p.set.cur.Load().TagTTL("test"); !ok || ttl != time.Hour {
		t.Fatalf("tag TTL %v %v", ttl, ok)
	}
	if _, ok := p.set.cur.Load().TagTTL("ghcr"); ok {
		t.Fatal("TTL for an upstream that set none")
	}
}

func TestMetricStats(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	m.Hits.WithLabelValues("blob").Add(2)
	m.Hits.WithLabelValues("manifest").Inc()
	m.Misses.WithLabelValues("blob").Add(5)
	m.BytesServed.WithLabelValues(metrics.SourceCache).Add(100)
	m.BytesServed.WithLabelValues(metrics.SourceUpstream).Add(50)
	m.StaleServes.Add(4)
	got := metricStats{m}.Stats()
	want := &selfhostv1.EdgeStats{CacheHits: 3, CacheMisses: 5, BytesFromCache: 100, BytesFromUpstream: 50, StaleServes: 4}
	if got.String() != want.String() {
		t.Fatalf("stats %v, want %v", got, want)
	}
}

func TestTagInvalidatorResolvesNames(t *testing.T) {
	t.Parallel()
	p := newParts(t)
	ctx := context.Background()
	keys := map[string][3]string{ // invalidation → stored record
		"dockerhub nginx latest": {"dockerhub", "library/nginx", "latest"},
		"quayio org/app v1":      {"quay", "org/app", "v1"},
		"gone x/y t":             {"gone", "x/y", "t"},
	}
	for _, k := range keys {
		key, _ := blob.TagKey("team-a", k[0], k[1], k[2])
		if err := p.mem.Put(ctx, key, []byte("{}"), "application/json"); err != nil {
			t.Fatal(err)
		}
	}
	inv := tagInvalidator{set: p.set, cache: p.cache}
	for msg, k := range keys {
		f := strings.Fields(msg)
		if err := inv.InvalidateTag(ctx, f[0], f[1], f[2]); err != nil {
			t.Fatalf("%s: %v", msg, err)
		}
		key, _ := blob.TagKey("team-a", k[0], k[1], k[2])
		if _, err := p.mem.Stat(ctx, key); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("%s: record %s still there", msg, key)
		}
	}
	if err := inv.InvalidateTag(ctx, "dockerhub", "Bad/Name", "x"); err == nil {
		t.Fatal("invalid repository accepted")
	}
}
