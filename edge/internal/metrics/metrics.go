// Package metrics holds the edge's Prometheus collectors on a registry of
// its own (never the global default), so tests and several edges in one
// process never share counters.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Sources of served bytes.
const (
	SourceCache    = "cache"
	SourceUpstream = "upstream"
)

// Metrics are the edge's collectors.
type Metrics struct {
	Registry *prometheus.Registry

	Hits             *prometheus.CounterVec // kind
	Misses           *prometheus.CounterVec // kind
	BytesServed      *prometheus.CounterVec // source
	UpstreamRequests *prometheus.CounterVec // upstream, kind, method
	UpstreamErrors   *prometheus.CounterVec // upstream, code
	FillsInFlight    prometheus.Gauge
	// UpstreamThrottled counts requests refused with 429 because the
	// namespace's upstream share was used up, by reason (rate, fills).
	UpstreamThrottled *prometheus.CounterVec
	StaleServes       prometheus.Counter
	StorageDegraded   prometheus.Gauge
	StorageErrors     *prometheus.CounterVec // op
	StorageDenied     *prometheus.CounterVec // op
	Requests          *prometheus.CounterVec // method, kind, code
	RequestDuration   *prometheus.HistogramVec
	ProxyDials        *prometheus.CounterVec // node, result
	ProxyFailovers    prometheus.Counter
}

// New returns Metrics registered on a fresh registry, with Go runtime and
// process collectors.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_cache_hits_total", Help: "Requests answered from storage, by kind (manifest, blob).",
		}, []string{"kind"}),
		Misses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_cache_misses_total", Help: "Requests that had to go upstream, by kind (manifest, blob).",
		}, []string{"kind"}),
		BytesServed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_bytes_served_total", Help: "Body bytes written to clients, by source (cache, upstream).",
		}, []string{"source"}),
		UpstreamRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_upstream_requests_total", Help: "Requests sent to upstream registries.",
		}, []string{"upstream", "kind", "method"}),
		UpstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_upstream_errors_total", Help: "Failed upstream requests, by upstream and status code (or 'network').",
		}, []string{"upstream", "code"}),
		FillsInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edge_fills_in_flight", Help: "Cold blob fills currently streaming from upstream.",
		}),
		UpstreamThrottled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_upstream_throttled_total",
			Help: "Requests that needed the upstream and got 429 instead, by reason: rate (the namespace's upstream requests per second and burst), fills (every concurrent fill slot stayed busy for the queue wait).",
		}, []string{"reason"}),
		StaleServes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edge_stale_serves_total", Help: "Tags served from a stale mapping because the upstream could not be reached.",
		}),
		StorageDegraded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edge_storage_degraded", Help: "1 while storage fails and pulls stream from upstream without caching.",
		}),
		StorageErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_storage_errors_total", Help: "Storage operations that failed (not counting not-found).",
		}, []string{"op"}),
		StorageDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_storage_denied_total", Help: "Storage operations the control plane's storage broker refused (no proof of access in the pull's scope): a read goes upstream, a write is skipped and the bytes are served without caching.",
		}, []string{"op"}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_http_requests_total", Help: "Registry API requests, by method, endpoint kind and status code.",
		}, []string{"method", "kind", "code"}),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "edge_http_request_duration_seconds", Help: "Time to the end of the response, by endpoint kind.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"kind"}),
		ProxyDials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_proxy_dials_total",
			Help: "Upstream connections dialled through a Clash node, by node and result: ok (the proxy accepted), error (dial or proxy handshake failed), no_response (accepted, but closed or silent before the first byte).",
		}, []string{"node", "result"}),
		ProxyFailovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edge_proxy_failovers_total", Help: "Times an upstream connection moved from a failed Clash node to the next one.",
		}),
	}
	m.Registry.MustRegister(m.Hits, m.Misses, m.BytesServed, m.UpstreamRequests, m.UpstreamErrors,
		m.FillsInFlight, m.UpstreamThrottled, m.StaleServes, m.StorageDegraded, m.StorageErrors, m.StorageDenied, m.Requests, m.RequestDuration,
		m.ProxyDials, m.ProxyFailovers, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
