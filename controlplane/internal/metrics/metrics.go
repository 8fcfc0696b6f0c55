// Package metrics holds the control plane's Prometheus collectors on a
// registry of its own (never the global default), so tests and several
// control planes in one process never share counters. The parts of the
// control plane report through small observer interfaces (push.Observer,
// the controller's and the injector's hooks); labels carry namespaces,
// results and Clash node names only, never tokens, URLs or error texts.
package metrics

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/stats"
)

// Results of an edge's answer to a configuration.
const (
	ResultACK  = "ack"
	ResultNACK = "nack"
)

// Reason classes of a NACK: the part of the configuration the edge
// refused, taken from the start of its error detail (which names the
// field). Anything else is ReasonOther, so a label never holds free text.
const (
	ReasonNone      = "none"
	ReasonUpstreams = "upstreams"
	ReasonStorage   = "storage"
	ReasonProxy     = "proxy"
	ReasonPolicy    = "policy"
	ReasonNamespace = "namespace"
	ReasonOther     = "other"
)

// Metrics are the control plane's collectors.
type Metrics struct {
	Registry *prometheus.Registry

	EdgesConnected     *prometheus.GaugeVec   // namespace
	ConfigPushes       *prometheus.CounterVec // namespace
	ConfigAcks         *prometheus.CounterVec // namespace, result, reason
	Reconciles         *prometheus.CounterVec // result
	ReconcileDuration  prometheus.Histogram
	Admissions         *prometheus.CounterVec // outcome
	GRPCConnections    prometheus.Gauge
	GRPCConnsTotal     prometheus.Counter
	GRPCConnsRefused   prometheus.Counter
	GRPCStreamsRefused prometheus.Counter
}

// New returns Metrics registered on a fresh registry, with Go runtime and
// process collectors.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		EdgesConnected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "controlplane_edges_connected", Help: "Edges with an open configuration stream, by namespace.",
		}, []string{"namespace"}),
		ConfigPushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "controlplane_config_pushes_total", Help: "Configuration versions sent to edges, by namespace.",
		}, []string{"namespace"}),
		ConfigAcks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "controlplane_config_acks_total",
			Help: "Edges' answers to configurations, by namespace, result (ack, nack) and reason class of a NACK (none, upstreams, storage, proxy, policy, namespace, other).",
		}, []string{"namespace", "result", "reason"}),
		Reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "controlplane_reconciles_total", Help: "Namespace reconciles of the controller (leader only), by result (success, error).",
		}, []string{"result"}),
		ReconcileDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "controlplane_reconcile_duration_seconds", Help: "Time of one namespace reconcile.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}),
		Admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "controlplane_webhook_admissions_total", Help: "Pod admissions of the injector webhook, by outcome (rewritten, untouched, skipped, error).",
		}, []string{"outcome"}),
		GRPCConnections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "controlplane_grpc_connections", Help: "Open gRPC (HTTP/2) connections: edges and admin clients.",
		}),
		GRPCConnsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "controlplane_grpc_connections_total", Help: "gRPC connections accepted since start.",
		}),
		GRPCConnsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "controlplane_grpc_connections_refused_total", Help: "gRPC connections closed at once because --max-grpc-connections were open.",
		}),
		GRPCStreamsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "controlplane_grpc_streams_refused_total", Help: "gRPC streams refused with ResourceExhausted because their caller (a namespace's edges, an admin, or all anonymous callers) held --max-grpc-streams-per-caller.",
		}),
	}
	m.Registry.MustRegister(m.EdgesConnected, m.ConfigPushes, m.ConfigAcks, m.Reconciles, m.ReconcileDuration,
		m.Admissions, m.GRPCConnections, m.GRPCConnsTotal, m.GRPCConnsRefused, m.GRPCStreamsRefused,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// EdgeConnected implements push.Observer.
func (m *Metrics) EdgeConnected(namespace string) { m.EdgesConnected.WithLabelValues(namespace).Inc() }

// EdgeDisconnected implements push.Observer.
func (m *Metrics) EdgeDisconnected(namespace string) {
	m.EdgesConnected.WithLabelValues(namespace).Dec()
}

// ConfigSent implements push.Observer.
func (m *Metrics) ConfigSent(namespace string) { m.ConfigPushes.WithLabelValues(namespace).Inc() }

// ConfigAnswered implements push.Observer: detail is the NACK's error
// text, reduced here to its reason class.
func (m *Metrics) ConfigAnswered(namespace string, accepted bool, detail string) {
	if accepted {
		m.ConfigAcks.WithLabelValues(namespace, ResultACK, ReasonNone).Inc()
		return
	}
	m.ConfigAcks.WithLabelValues(namespace, ResultNACK, ReasonClass(detail)).Inc()
}

// ReasonClass maps a NACK's error detail to its reason class by the
// field it starts with ("upstreams[0].url: …" is ReasonUpstreams).
func ReasonClass(detail string) string {
	d := strings.ToLower(strings.TrimSpace(detail))
	d = strings.TrimPrefix(d, "invalid configuration: ")
	for _, c := range []struct{ prefix, class string }{
		{"upstream", ReasonUpstreams},
		{"storage", ReasonStorage},
		{"prox", ReasonProxy},
		{"policy", ReasonPolicy},
		{"namespace", ReasonNamespace},
	} {
		if strings.HasPrefix(d, c.prefix) {
			return c.class
		}
	}
	return ReasonOther
}

// Reconciled records one namespace reconcile.
func (m *Metrics) Reconciled(err error, d time.Duration) {
	result := "success"
	if err != nil {
		result = "error"
	}
	m.Reconciles.WithLabelValues(result).Inc()
	m.ReconcileDuration.Observe(d.Seconds())
}

// Admitted records one webhook admission by outcome.
func (m *Metrics) Admitted(outcome string) { m.Admissions.WithLabelValues(outcome).Inc() }

// ConnRefused records a gRPC connection closed over the connection cap.
func (m *Metrics) ConnRefused() { m.GRPCConnsRefused.Inc() }

// StreamRefused records a gRPC stream refused over its caller's limit.
func (m *Metrics) StreamRefused() { m.GRPCStreamsRefused.Inc() }

// StatsHandler counts the gRPC server's connections (grpc.StatsHandler).
func (m *Metrics) StatsHandler() stats.Handler { return connStats{m} }

type connStats struct{ m *Metrics }

func (c connStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (c connStats) HandleRPC(context.Context, stats.RPCStats)                       {}
func (c connStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

func (c connStats) HandleConn(_ context.Context, s stats.ConnStats) {
	switch s.(type) {
	case *stats.ConnBegin:
		c.m.GRPCConnections.Inc()
		c.m.GRPCConnsTotal.Inc()
	case *stats.ConnEnd:
		c.m.GRPCConnections.Dec()
	}
}
