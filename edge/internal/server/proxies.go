package server

import (
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/metrics"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/clashnode"
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
func (p *proxies) dialOption(prefix string, nodes []*clashnode.Node) ([]upstream.Option, error) {
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
func proxyKey(nodes []*clashnode.Node) string {
	parts := make([]string, len(nodes))
	for i, n := range nodes {
		parts[i] = n.Name() + "@" + n.Fingerprint()
	}
	return strings.Join(parts, ",")
}
