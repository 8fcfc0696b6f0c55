package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/clash"
)

// ClashStatus is what the Clash collector reads at every scrape
// (clash.Manager).
type ClashStatus interface {
	Status() clash.Status
}

var (
	clashSelectedDesc = prometheus.NewDesc("controlplane_clash_node_selected",
		"1 for the Clash node edges dial first, 0 for the other nodes of the pool, by node name.", []string{"node"}, nil)
	clashHealthyDesc = prometheus.NewDesc("controlplane_clash_node_healthy",
		"1 when the node's last probe succeeded, by node name.", []string{"node"}, nil)
	clashLatencyDesc = prometheus.NewDesc("controlplane_clash_node_latency_seconds",
		"Latency of the node's last successful probe, by node name.", []string{"node"}, nil)
)

// RegisterClash adds gauges of the Clash pool, read from s at every
// scrape: the selection and each node's health. Labels hold node names
// only (never servers, passwords or the subscription URL).
func (m *Metrics) RegisterClash(s ClashStatus) error {
	return m.Registry.Register(clashCollector{s})
}

type clashCollector struct{ s ClashStatus }

func (c clashCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- clashSelectedDesc
	ch <- clashHealthyDesc
	ch <- clashLatencyDesc
}

func (c clashCollector) Collect(ch chan<- prometheus.Metric) {
	seen := map[string]bool{}
	for _, n := range c.s.Status().Nodes {
		if seen[n.Name] {
			continue // a duplicate name would make the scrape fail
		}
		seen[n.Name] = true
		ch <- prometheus.MustNewConstMetric(clashSelectedDesc, prometheus.GaugeValue, boolValue(n.Selected), n.Name)
		ch <- prometheus.MustNewConstMetric(clashHealthyDesc, prometheus.GaugeValue, boolValue(n.Alive), n.Name)
		if n.Alive {
			ch <- prometheus.MustNewConstMetric(clashLatencyDesc, prometheus.GaugeValue, n.Latency.Seconds(), n.Name)
		}
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
