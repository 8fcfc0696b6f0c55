package clash

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/clash/clashtest"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/configstore"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/snapshot"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/clashnode"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/configspec"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// memSource is a config.Source in memory that records saves.
type memSource struct {
	mu    sync.Mutex
	saved *config.State
	saves int
}

func (m *memSource) Load(context.Context) (*config.State, error) { return nil, errors.New("unused") }
func (m *memSource) Save(_ context.Context, st *config.State) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.saved, m.saves = st.Clone(), m.saves+1
	return nil
}

func (m *memSource) last() (*config.State, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.saved, m.saves
}

// commits counts the store's announcements (what the push server sees).
type commits struct{ n atomic.Int64 }

func (c *commits) ConfigChanged(*snapshot.Set) { c.n.Add(1) }

// fakeSource serves a body or an error.
type fakeSource struct {
	mu   sync.Mutex
	body []byte
	err  error
}

func (f *fakeSource) set(body []byte, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.body, f.err = body, err
}

func (f *fakeSource) Fetch(context.Context) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.body, f.err
}

// fakeProber answers with a latency per node name, or an error.
type fakeProber struct {
	mu    sync.Mutex
	lat   map[string]time.Duration
	fail  map[string]string
	calls map[string]int
}

func newFakeProber(lat map[string]time.Duration) *fakeProber {
	return &fakeProber{lat: lat, fail: map[string]string{}, calls: map[string]int{}}
}

func (f *fakeProber) Probe(_ context.Context, n *clashnode.Node, _ string) (time.Duration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[n.Name()]++
	if msg, ok := f.fail[n.Name()]; ok {
		return 0, errors.New(msg)
	}
	if d, ok := f.lat[n.Name()]; ok {
		return d, nil
	}
	return 0, errors.New("no latency configured")
}

func (f *fakeProber) setLatency(name string, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lat[name] = d
	delete(f.fail, name)
}

func (f *fakeProber) setFail(name, msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[name] = msg
}

// socksNode is a node that parses (mihomo does not dial at parse time);
// its password is a secret tests search for.
func socksNode(name string, port int) map[string]any {
	return map[string]any{"name": name, "type": "socks5", "server": "127.0.0.1", "port": port, "username": "u", "password": "pw-" + name + "-Secret"}
}

type harness struct {
	store   *configstore.Store
	source  *memSource
	commits *commits
	sub     *fakeSource
	prober  *fakeProber
	mgr     *Manager
	logs    *syncLog
}

type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// newHarness: a real store with Clash enabled, one namespace, a fake
// subscription of nodes a, b, c (latencies 100, 50, 200 ms) and one
// broken entry, a fake prober.
func newHarness(t *testing.T, mutate func(*Options)) *harness {
	t.Helper()
	st := &config.State{
		Upstreams:  configspec.DefaultUpstreams(),
		Namespaces: map[string]*config.Namespace{"team-a": {}},
		Clash:      config.Clash{Enabled: true, Mode: selfhostv1.ProxyMode_PROXY_MODE_AUTO},
	}
	h := &harness{source: &memSource{}, commits: &commits{}, sub: &fakeSource{}, logs: &syncLog{}}
	log := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var err error
	if h.store, err = configstore.New(st, h.source, snapshot.Builder{}, log); err != nil {
		t.Fatal(err)
	}
	h.store.Subscribe(h.commits)
	h.sub.set(clashtest.ClashYAML(socksNode("a", 1001), socksNode("b", 1002), socksNode("c", 1003),
		map[string]any{"name": "broken", "type": "ss", "server": "x", "port": 1, "cipher": "nope", "password": "broken-Secret"}), nil)
	h.prober = newFakeProber(map[string]time.Duration{"a": 100 * time.Millisecond, "b": 50 * time.Millisecond, "c": 200 * time.Millisecond})
	opts := Options{Source: h.sub, ConfigStore: h.store, Prober: h.prober, Logger: log, ProbeURL: "http://probe.invalid/v2/",
		Selector: ToleranceSelector{Tolerance: Tolerance{Percent: 30, Min: 20 * time.Millisecond}}}
	if mutate != nil {
		mutate(&opts)
	}
	if h.mgr, err = NewManager(opts); err != nil {
		t.Fatal(err)
	}
	return h
}

// newBenchHarness is a Manager over a real store, for benchmarks.
func newBenchHarness(b *testing.B, opts Options) *Manager {
	b.Helper()
	st := &config.State{Upstreams: configspec.DefaultUpstreams(), Namespaces: map[string]*config.Namespace{"team-a": {}}, Clash: config.Clash{Enabled: true}}
	s, err := configstore.New(st, &memSource{}, snapshot.Builder{}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	opts.ConfigStore = s
	m, err := NewManager(opts)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

func (h *harness) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.mgr.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func (h *harness) order() string {
	p := h.store.Current().Proxy
	if p == nil {
		return ""
	}
	return strings.Join(p.Order, " ")
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) noSecretsLogged(t *testing.T) {
	t.Helper()
	if s := fixtureSecrets.FindString(h.logs.String()); s != "" {
		t.Fatalf("the log holds a secret (%s):\n%s", s, h.logs.String())
	}
}

func TestManagerRefreshSelects(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	res, err := h.mgr.Refresh(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if res.Nodes != 3 || len(res.Skipped) != 1 || res.Skipped[0].Name != "broken" {
		t.Fatalf("result %+v", res)
	}
	if got := h.order(); got != "b a c" {
		t.Fatalf("order %q, want fastest first", got)
	}
	ns, _ := h.store.Current().Namespace("team-a")
	sel := ns.Config.GetProxy()
	if sel.GetMode() != selfhostv1.ProxyMode_PROXY_MODE_AUTO || len(sel.GetNodes()) != 3 || !strings.Contains(sel.GetNodes()[0].GetClashJson(), "pw-b-Secret") {
		t.Fatalf("snapshot selection %v", sel)
	}
	st := h.mgr.Status()
	if st.Mode != selfhostv1.ProxyMode_PROXY_MODE_AUTO || len(st.Nodes) != 3 || st.Fetched.IsZero() || st.FetchError != "" {
		t.Fatalf("status %+v", st)
	}
	servers := map[string]string{"a": "127.0.0.1:1001", "b": "127.0.0.1:1002", "c": "127.0.0.1:1003"}
	for _, n := range st.Nodes {
		if n.Selected != (n.Name == "b") || !n.Alive || len(n.History) != 1 || n.Server != servers[n.Name] || n.Type != "socks5" {
			t.Errorf("node %+v", n)
		}
	}
	if _, saves := h.source.last(); saves != 0 {
		t.Errorf("the runtime selection was persisted (%d saves)", saves)
	}
	h.noSecretsLogged(t)
}

// TestManagerJitterDoesNotPush: probe rounds that only move latencies a
// little change nothing an edge sees, so nothing is pushed; a dead node
// is replaced within a round.
func TestManagerJitterDoesNotPush(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(o *Options) { o.ProbeInterval = 10 * time.Millisecond })
	h.run(t)
	eventually(t, "the first selection", func() bool { return h.order() == "b a c" })
	base := h.commits.n.Load()
	for i := range 20 {
		h.prober.setLatency("a", time.Duration(95+i%10)*time.Millisecond)
		h.prober.setLatency("b", time.Duration(45+i%10)*time.Millisecond)
		time.Sleep(10 * time.Millisecond)
	}
	if n := h.commits.n.Load(); n != base || h.order() != "b a c" {
		t.Fatalf("jitter pushed %d times; order %q", n-base, h.order())
	}
	h.prober.setFail("b", "connection refused")
	eventually(t, "b replaced", func() bool { return h.order() == "a c" })
	if n := h.commits.n.Load(); n != base+1 {
		t.Errorf("%d pushes for one re-selection", n-base)
	}
}

func TestManagerFetchFailureKeepsPool(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	if _, err := h.mgr.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	version := h.store.Current().Version
	for _, tc := range []struct {
		body []byte
		err  error
		want string
	}{
		{nil, fmt.Errorf("%w: the subscription server answered 502 Bad Gateway", ErrSubscription), "502"},
		{[]byte("<html><body>Sign in</body></html>"), nil, "HTML page"},
		{[]byte(""), nil, "empty"},
		{clashtest.ClashYAML(map[string]any{"name": "x", "type": "warp"}), nil, "no usable node"},
	} {
		h.sub.set(tc.body, tc.err)
		_, err := h.mgr.Refresh(t.Context())
		if !errors.Is(err, ErrSubscription) || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("Refresh = %v, want %q", err, tc.want)
		}
		st := h.mgr.Status()
		if len(st.Nodes) != 3 || !strings.Contains(st.FetchError, tc.want) {
			t.Fatalf("status after a failed fetch: %d nodes, error %q", len(st.Nodes), st.FetchError)
		}
		if h.store.Current().Version != version {
			t.Fatal("a failed fetch changed the configuration")
		}
	}
	if !strings.Contains(h.logs.String(), "subscription fetch failed") {
		t.Error("failure not logged")
	}
	h.sub.set(clashtest.ClashYAML(socksNode("a", 1001)), nil)
	if _, err := h.mgr.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := h.mgr.Status(); st.FetchError != "" || len(st.Nodes) != 1 || h.order() != "a" {
		t.Fatalf("after recovery: %+v, order %q", st, h.order())
	}
}

func TestManagerHealthCarriesOverRefresh(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	if _, err := h.mgr.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	changed := socksNode("c", 1003)
	changed["password"] = "pw-c-rotated-Secret"
	h.sub.set(clashtest.ClashYAML(socksNode("a", 1001), socksNode("b", 1002), changed, socksNode("d", 1004)), nil)
	h.prober.setLatency("d", 10*time.Millisecond)
	if _, err := h.mgr.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	hist := map[string]int{}
	for _, n := range h.mgr.Status().Nodes {
		hist[n.Name] = len(n.History)
	}
	if hist["a"] != 2 || hist["b"] != 2 || hist["c"] != 1 || hist["d"] != 1 {
		t.Fatalf("history lengths %v: unchanged nodes keep theirs, changed and new ones start over", hist)
	}
	// d is clearly faster than b (10 vs 50 ms): it takes over.
	if got := h.order(); got != "d b a c" {
		t.Fatalf("order %q", got)
	}
}
