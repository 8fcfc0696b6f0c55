package clash

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/snapshot"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/clashnode"
)

// ConfigStore is where the Manager commits the pool and the selection
// (configstore.Store): Update for the operator's choices, which are persisted,
// UpdateRuntime for the pool and the order, which are not. Both build the
// snapshots and push them when their versions change.
type ConfigStore interface {
	Current() *snapshot.Set
	Update(ctx context.Context, op string, mutate func(st *config.State) error) (*snapshot.Set, error)
	UpdateRuntime(ctx context.Context, op string, mutate func(st *config.State) bool) (*snapshot.Set, error)
}

// Defaults of the Options.
const (
	DefaultRefreshInterval = time.Hour
	DefaultProbeInterval   = time.Minute
	DefaultProbeTimeout    = 5 * time.Second
	DefaultConcurrency     = 16
	DefaultRetryInterval   = 10 * time.Second
)

// Options configure a Manager. Source and ConfigStore are required; zero values
// elsewhere mean the defaults.
type Options struct {
	Source      SubscriptionSource
	ConfigStore ConfigStore
	Prober      Prober   // default MihomoProber
	Selector    Selector // default ToleranceSelector with 30 % / 20 ms
	Logger      *slog.Logger

	// RefreshInterval between subscription fetches.
	RefreshInterval time.Duration
	// RetryInterval after a failed fetch; it doubles up to
	// RefreshInterval.
	RetryInterval time.Duration
	// ProbeInterval between probe rounds.
	ProbeInterval time.Duration
	// ProbeTimeout bounds each probe.
	ProbeTimeout time.Duration
	// ProbeURL is fetched through every node; empty means the first
	// upstream's (by prefix) /v2/.
	ProbeURL string
	// Concurrency bounds the probes running at once.
	Concurrency int
}

// Manager keeps the node pool, its health and the selection current:
// Run fetches and probes periodically; the admin API calls Status,
// Select, SetMode and Refresh; the push server hands it edges' failure
// reports. It is safe for concurrent use.
type Manager struct {
	opts Options
	log  *slog.Logger

	fetchMu sync.Mutex // one fetch at a time
	probeMu sync.Mutex // one probe round at a time
	reports chan report

	mu       sync.Mutex // guards the fields below and every entry's health
	pool     *pool
	gen      uint64
	skipped  []Skipped
	fetched  time.Time
	fetchErr string
}

// pool is one generation of nodes; entries carry over a refresh when the
// node did not change.
type pool struct {
	gen     uint64
	entries []*entry // subscription order
	byName  map[string]*entry
	protos  map[string]*selfhostv1.ProxyNode // shared into config.ProxyPool
}

type entry struct {
	node     *clashnode.Node
	health   Health
	checking bool // a re-check after an edge report is running
}

// NewManager returns a Manager; Run starts its work.
func NewManager(opts Options) (*Manager, error) {
	if opts.Source == nil || opts.ConfigStore == nil {
		return nil, errors.New("clash: Options.Source and Options.Store are required")
	}
	if opts.Prober == nil {
		opts.Prober = MihomoProber{}
	}
	if opts.Selector == nil {
		opts.Selector = ToleranceSelector{Tolerance: Tolerance{Percent: 30, Min: 20 * time.Millisecond}}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.RefreshInterval, DefaultRefreshInterval)
	def(&opts.RetryInterval, DefaultRetryInterval)
	def(&opts.ProbeInterval, DefaultProbeInterval)
	def(&opts.ProbeTimeout, DefaultProbeTimeout)
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultConcurrency
	}
	return &Manager{opts: opts, log: opts.Logger, reports: make(chan report, 256)}, nil
}

// Run fetches the subscription at once and then every RefreshInterval
// (retrying a failed fetch sooner), probes every ProbeInterval, and
// re-checks nodes edges report, until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		m.closeNodes()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.handleReports(ctx)
	}()
	refresh := time.NewTimer(0)
	defer refresh.Stop()
	probe := time.NewTicker(m.opts.ProbeInterval)
	defer probe.Stop()
	retry := m.opts.RetryInterval
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-refresh.C:
			if _, err := m.refresh(ctx); err != nil {
				refresh.Reset(retry)
				retry = min(2*retry, m.opts.RefreshInterval)
			} else {
				refresh.Reset(m.opts.RefreshInterval)
				retry = m.opts.RetryInterval
			}
			probe.Reset(m.opts.ProbeInterval) // a refresh just probed
		case <-probe.C:
			m.probeAll(ctx)
			m.reselect(ctx, "probe round")
		}
	}
}

// refresh fetches and parses the subscription, swaps the pool, probes it
// and commits the selection. A failure keeps the pool in use.
func (m *Manager) refresh(ctx context.Context) (*clashnode.List, error) {
	m.fetchMu.Lock()
	defer m.fetchMu.Unlock()
	body, err := m.opts.Source.Fetch(ctx)
	var sub *clashnode.List
	if err == nil {
		sub, err = Parse(body)
	}
	if err != nil {
		if sub != nil {
			closeAll(sub.Nodes)
		}
		m.mu.Lock()
		m.fetchErr = err.Error()
		kept := 0
		if m.pool != nil {
			kept = len(m.pool.entries)
		}
		m.mu.Unlock()
		m.log.Warn("subscription fetch failed; keeping the node pool in use", "err", err.Error(), "nodes_kept", kept)
		return nil, err
	}
	added, removed := m.swapPool(sub)
	m.log.Info("subscription fetched", "format", sub.Format, "nodes", len(sub.Nodes), "skipped", len(sub.Skipped), "added", added, "removed", removed)
	for i, s := range sub.Skipped {
		if i == 20 {
			m.log.Warn("more subscription entries skipped; ListProxyNodes lists them all", "more", len(sub.Skipped)-i)
			break
		}
		m.log.Warn("subscription entry skipped", "name", s.Name, "reason", s.Reason)
	}
	m.probeAll(ctx)
	m.reselect(ctx, "subscription refresh")
	return sub, nil
}

// swapPool makes sub's nodes the pool. A node whose name and map did not
// change keeps its entry (adapter and health history).
func (m *Manager) swapPool(sub *clashnode.List) (added, removed int) {
	m.mu.Lock()
	old := m.pool
	m.gen++
	p := &pool{gen: m.gen, byName: map[string]*entry{}, protos: map[string]*selfhostv1.ProxyNode{}}
	var unused []*clashnode.Node
	for _, n := range sub.Nodes {
		e, ok := (*entry)(nil), false
		if old != nil {
			e, ok = old.byName[n.Name()]
		}
		if ok && e.node.Fingerprint() == n.Fingerprint() { // same name and map
			unused = append(unused, n) // the old adapter stays in use
		} else {
			e = &entry{node: n}
			added++
		}
		p.entries = append(p.entries, e)
		p.byName[n.Name()] = e
		p.protos[n.Name()] = e.node.Proto()
	}
	if old != nil {
		for _, e := range old.entries {
			if p.byName[e.node.Name()] != e {
				unused = append(unused, e.node)
				removed++
			}
		}
	}
	m.pool, m.skipped, m.fetched, m.fetchErr = p, sub.Skipped, time.Now(), ""
	m.mu.Unlock()
	closeAll(unused)
	return added, removed
}

// probeAll probes every node of the pool, Concurrency at a time.
func (m *Manager) probeAll(ctx context.Context) {
	m.probeMu.Lock()
	defer m.probeMu.Unlock()
	m.mu.Lock()
	p := m.pool
	m.mu.Unlock()
	if p == nil {
		return
	}
	url := m.probeURL()
	if url == "" {
		m.log.Warn("no probe URL: set clash.probeUrl or configure an upstream")
		return
	}
	start := time.Now()
	sem := make(chan struct{}, m.opts.Concurrency)
	var wg sync.WaitGroup
	for _, e := range p.entries {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			m.probe(ctx, e, url)
		}()
	}
	wg.Wait()
	alive := 0
	m.mu.Lock()
	for _, e := range p.entries {
		if e.health.Alive {
			alive++
		}
	}
	m.mu.Unlock()
	m.log.Debug("probe round done", "nodes", len(p.entries), "alive", alive, "took", time.Since(start).String())
}

// probe measures one node and records the result; it logs a change of
// liveness.
func (m *Manager) probe(ctx context.Context, e *entry, url string) {
	pctx, cancel := context.WithTimeout(ctx, m.opts.ProbeTimeout)
	d, err := m.opts.Prober.Probe(pctx, e.node, url)
	cancel()
	if ctx.Err() != nil {
		return // shutting down: not the node's fault
	}
	errText := ""
	if err != nil {
		errText = clip(e.node.Redact(err.Error()), 512)
	}
	m.mu.Lock()
	was := e.health.Alive
	first := e.health.LastChecked.IsZero()
	e.health.record(time.Now(), d, errText)
	current := m.pool != nil && m.pool.byName[e.node.Name()] == e
	m.mu.Unlock()
	switch {
	case !current:
		// Replaced by a refresh while it was probed: nobody cares.
	case err != nil && (was || first):
		m.log.Warn("proxy node is down", "node", e.node.Name(), "err", errText)
	case err == nil && !was:
		m.log.Info("proxy node is up", "node", e.node.Name(), "latency", d.String())
	}
}

// probeURL is the configured URL, or the first upstream's /v2/.
func (m *Manager) probeURL() string {
	if m.opts.ProbeURL != "" {
		return m.opts.ProbeURL
	}
	ups := m.opts.ConfigStore.Current().Upstreams
	if len(ups) == 0 {
		return ""
	}
	return strings.TrimSuffix(ups[0].GetUrl(), "/") + "/v2/"
}

// Reselect recomputes the proxy selection from the committed mode and
// pinned node, for changes that reached the store without going through
// SetMode or Select (another replica's, reloaded from shared state).
func (m *Manager) Reselect(ctx context.Context, why string) { m.reselect(ctx, why) }

// reselect commits the pool and the order the Selector picks now, when
// either changed; the store pushes it when a snapshot changed.
func (m *Manager) reselect(ctx context.Context, why string) {
	before := m.opts.ConfigStore.Current().Proxy
	after, err := m.opts.ConfigStore.UpdateRuntime(ctx, "proxy selection ("+why+")", func(st *config.State) bool {
		v := m.view(st)
		if v == nil || (st.Proxy != nil && st.Proxy.Generation == v.Generation && slices.Equal(st.Proxy.Order, v.Order)) {
			return false
		}
		st.Proxy = v
		return true
	})
	if err != nil {
		m.log.Error("proxy selection not committed", "why", why, "err", err)
		return
	}
	if before.GetSelected() != after.Proxy.GetSelected() {
		m.log.Info("proxy selection changed", "why", why, "from", before.GetSelected(), "to", after.Proxy.GetSelected(),
			"mode", config.ProxyModeName(after.Proxy.Mode), "order", after.Proxy.Order)
	}
}

// view is the pool and the order for st's mode, or nil before the first
// fetch. It is called inside the store's mutate functions: it locks m.mu
// and never calls the store.
func (m *Manager) view(st *config.State) *config.ProxyPool {
	m.mu.Lock()
	p := m.pool
	if p == nil {
		m.mu.Unlock()
		return nil
	}
	cands := make([]Candidate, len(p.entries))
	for i, e := range p.entries {
		cands[i] = Candidate{Name: e.node.Name(), Alive: e.health.Alive, Latency: e.health.Latency}
	}
	m.mu.Unlock()
	var prev []string
	if st.Proxy != nil {
		prev = st.Proxy.Order
	}
	order := m.opts.Selector.Select(SelectInput{Mode: st.Clash.Mode, Pinned: st.Clash.Pinned, Previous: prev, Nodes: cands})
	return &config.ProxyPool{Generation: p.gen, Nodes: p.protos, Order: order}
}

func (m *Manager) closeNodes() {
	m.mu.Lock()
	p := m.pool
	m.mu.Unlock()
	if p != nil {
		for _, e := range p.entries {
			e.node.Close()
		}
	}
}

func closeAll(nodes []*clashnode.Node) {
	for _, n := range nodes {
		n.Close()
	}
}

// clip shortens s to at most n bytes on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
