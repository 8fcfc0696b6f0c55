package server

import (
	"context"
	"fmt"
	"math"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/cache"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/configclient"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/metrics"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// metricStats reports the edge's Prometheus counters to the control plane
// (configclient.StatsSource), so the admin API and /metrics never disagree.
type metricStats struct{ m *metrics.Metrics }

var _ configclient.StatsSource = metricStats{}

func (s metricStats) Stats() *selfhostv1.EdgeStats {
	return &selfhostv1.EdgeStats{
		CacheHits:         sumCounter(s.m.Hits, nil),
		CacheMisses:       sumCounter(s.m.Misses, nil),
		BytesFromCache:    sumCounter(s.m.BytesServed, map[string]string{"source": metrics.SourceCache}),
		BytesFromUpstream: sumCounter(s.m.BytesServed, map[string]string{"source": metrics.SourceUpstream}),
		StaleServes:       sumCounter(s.m.StaleServes, nil),
	}
}

// sumCounter adds up the counters c collects whose labels match want.
func sumCounter(c prometheus.Collector, want map[string]string) uint64 {
	ch := make(chan prometheus.Metric, 16)
	go func() { c.Collect(ch); close(ch) }()
	var sum float64
	for m := range ch {
		var pb dto.Metric
		if m.Write(&pb) != nil || pb.GetCounter() == nil || !labelsMatch(pb.GetLabel(), want) {
			continue
		}
		sum += pb.GetCounter().GetValue()
	}
	if sum <= 0 || math.IsNaN(sum) {
		return 0
	}
	return uint64(sum)
}

func labelsMatch(labels []*dto.LabelPair, want map[string]string) bool {
	n := 0
	for _, l := range labels {
		if v, ok := want[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

// tagInvalidator resolves an invalidation against the current routing table
// before deleting the record (configclient.TagInvalidator): an alias names its
// upstream's records, and a one-segment Docker Hub name its "library/" one,
// exactly as a pull of the same reference would store them.
type tagInvalidator struct {
	set   *upstreamSet
	cache *cache.Cache
}

var _ configclient.TagInvalidator = tagInvalidator{}

func (t tagInvalidator) InvalidateTag(ctx context.Context, prefix, repository, tag string) error {
	table := t.set.cur.Load().table
	if _, ok := table.Lookup(prefix); ok {
		rt, err := table.Parse("/v2/"+prefix+"/"+repository+"/manifests/"+tag, nil)
		if err != nil {
			return fmt.Errorf("invalidate tag %s/%s:%s: %w", prefix, repository, tag, err)
		}
		prefix, repository = rt.Prefix, rt.Repository
	}
	// An upstream no longer configured may still have records; the key is
	// then taken literally.
	return t.cache.InvalidateTag(ctx, prefix, repository, tag)
}
