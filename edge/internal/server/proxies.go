package server

import (
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/metrics"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/proxydial"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// failureReporter sends ProxyFailure reports to the control plane
// (control.Client); it must not block.
type failureReporter interface {
	ReportProxyFailure(f *selfhostv1.ProxyFailure) bool
}

// proxyObserver counts proxy dials in the edge's metrics and forwards
// failures to the control plane once a client is attached.
type proxyObserver struct {
	m        *metrics.Metrics
	reporter atomic.Value // failureReporter
}

var _ proxydial.Observer = (*proxyObserver)(nil)

func (o *proxyObserver) Dialed(node, result string) {
	o.m.ProxyDials.WithLabelValues(node, result).Inc()
}

func (o *proxyObserver) FailedOver() { o.m.ProxyFailovers.Inc() }

func (o *proxyObserver) Failed(f proxydial.Failure) {
	if r, ok := o.reporter.Load().(failureReporter); ok {
		r.ReportProxyFailure(&selfhostv1.ProxyFailure{Node: f.Node, Prefix: f.Prefix, Error: f.Error})
	}
}

// setReporter attaches the control-plane client.
func (o *proxyObserver) setReporter(r failureReporter) { o.reporter.Store(r) }

// proxies is what every upstream dialer of the edge shares: one failure
// memory (a node found dead for one upstream is skipped for all), one
// observer, the dial timeouts.
type proxies struct {
	health *proxydial.Health
	obs    *proxyObserver
	log    *slog.Logger
	opts   []proxydial.Option
}

func newProxies(m *metrics.Metrics, log *slog.Logger, firstByteTimeout time.Duration) *proxies {
	p := &proxies{health: proxydial.NewHealth(proxydial.DefaultFailureMemory), obs: &proxyObserver{m: m}, log: log}
	p.opts = []proxydial.Option{proxydial.WithHealth(p.health), proxydial.WithObserver(p.obs),
		proxydial.WithLogger(log.With("component", "proxy")), proxydial.WithFirstByteTimeout(firstByteTimeout)}
	return p
}

// dialOption returns the upstream option that dials through nodes with
// failover; no option (direct) for an empty list.
func (p *proxies) dialOption(prefix string, nodes []*proxydial.Node) ([]upstream.Option, error) {
	if len(nodes) == 0 {
		return nil, nil
	}
	d, err := proxydial.NewDialer(prefix, nodes, p.opts...)
	if err != nil {
		return nil, err
	}
	return []upstream.Option{upstream.WithDialer(d.DialContext)}, nil
}

// proxyKey identifies a node list for client reuse: "" is direct.
func proxyKey(nodes []*proxydial.Node) string {
	parts := make([]string, len(nodes))
	for i, n := range nodes {
		parts[i] = n.Name() + "@" + n.Fingerprint()
	}
	return strings.Join(parts, ",")
}

// nodePool is the proxy part of one EdgeConfig, parsed.
type nodePool struct {
	byName  map[string]*proxydial.Node
	skipped map[string]string // node name → why it is unusable
	// selection is what upstreams without an override use: the nodes in
	// preference order, or nil for direct.
	selection []*proxydial.Node
}

// parseSelection builds the nodes of sel. A node that does not parse is
// skipped and logged (one bad node never takes the others down); two nodes
// with one name are an error.
func parseSelection(sel *selfhostv1.ProxySelection, log *slog.Logger) (*nodePool, error) {
	pool := &nodePool{byName: map[string]*proxydial.Node{}, skipped: map[string]string{}}
	var ordered []*proxydial.Node
	for i, pn := range sel.GetNodes() {
		field := fmt.Sprintf("proxy.nodes[%d]", i)
		if pn.GetName() == "" {
			return nil, fmt.Errorf("%s.name: empty", field)
		}
		if _, dup := pool.byName[pn.GetName()]; dup || pool.skipped[pn.GetName()] != "" {
			return nil, fmt.Errorf("%s.name: %q is used twice", field, pn.GetName())
		}
		n, err := proxydial.NodeFromJSON(pn.GetName(), pn.GetClashJson())
		if err == nil && pn.GetType() != "" && !strings.EqualFold(pn.GetType(), n.Type()) {
			err = fmt.Errorf("type %q differs from the type %q of clash_json", pn.GetType(), n.Type())
		}
		if err != nil {
			// err never holds the node's secrets.
			pool.skipped[pn.GetName()] = err.Error()
			log.Warn("proxy node skipped: it does not parse", "field", field, "node", pn.GetName(), "err", err)
			continue
		}
		pool.byName[n.Name()] = n
		ordered = append(ordered, n)
	}
	switch sel.GetMode() {
	case selfhostv1.ProxyMode_PROXY_MODE_AUTO, selfhostv1.ProxyMode_PROXY_MODE_PINNED:
		if len(ordered) == 0 {
			log.Warn("proxy mode has no usable node: upstreams that follow it dial directly",
				"mode", sel.GetMode().String(), "nodes", len(sel.GetNodes()))
		}
		pool.selection = ordered
	}
	return pool, nil
}

// nodesFor resolves an upstream's proxy override against the pool: "" and
// "auto" follow the selection, "direct" dials directly, anything else
// names one node, which is then the only one (no fallback: an operator who
// pins an upstream to a node wants that path or none).
func (p *nodePool) nodesFor(field, override string) ([]*proxydial.Node, error) {
	ov := strings.TrimSpace(override)
	switch {
	case ov == "" || strings.EqualFold(ov, "auto"):
		return p.selection, nil
	case strings.EqualFold(ov, "direct"):
		return nil, nil
	}
	if n, ok := p.byName[ov]; ok {
		return []*proxydial.Node{n}, nil
	}
	if why, ok := p.skipped[ov]; ok {
		return nil, fmt.Errorf("%s.proxy: node %q is not usable: %s", field, ov, why)
	}
	return nil, fmt.Errorf("%s.proxy: node %q is not among proxy.nodes", field, ov)
}
