package clash

import (
	"context"
	"fmt"
	"sync"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// report is one edge's failure report, queued for handleReports.
type report struct {
	namespace, pod string
	failure        *selfhostv1.ProxyFailure
}

// ReportProxyFailure takes an edge's report that dialing through a node
// failed. It never blocks (the caller is the edge's stream): the report is
// queued, or dropped when the queue is full. The node is then marked
// suspect and probed at once; a dead node is replaced in the selection.
func (m *Manager) ReportProxyFailure(namespace, pod string, f *selfhostv1.ProxyFailure) {
	if f.GetNode() == "" || len(f.GetNode()) > 256 {
		m.log.Debug("proxy failure report without a usable node name; ignored", "namespace", namespace, "pod", pod)
		return
	}
	select {
	case m.reports <- report{namespace, pod, f}:
	default:
		// Debug: a flood of reports must not become a flood of log lines.
		m.log.Debug("too many proxy failure reports queued; one dropped", "namespace", namespace, "pod", pod)
	}
}

// handleReports marks reported nodes suspect and re-checks each in its own
// goroutine, at most one per node at a time, until ctx ends.
func (m *Manager) handleReports(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-m.reports:
			e := m.markSuspect(r)
			if e == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				m.recheck(ctx, e)
			}()
		}
	}
}

// markSuspect records the report on its node and returns the entry to
// re-check, or nil (unknown node, or a re-check is already running).
func (m *Manager) markSuspect(r report) *entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pool == nil {
		return nil
	}
	e, ok := m.pool.byName[r.failure.GetNode()]
	if !ok {
		m.log.Debug("proxy failure report for a node not in the pool; ignored", "namespace", r.namespace, "pod", r.pod, "node", clip(r.failure.GetNode(), 128))
		return nil
	}
	// The edge should send no secrets; scrubbed all the same.
	text := e.node.Redact(clip(r.failure.GetError(), 512))
	e.health.reported(fmt.Sprintf("edge %s/%s, upstream %q: %s", r.namespace, clip(r.pod, 64), clip(r.failure.GetPrefix(), 64), text))
	if e.checking {
		return nil
	}
	e.checking = true
	m.log.Warn("edge reported a proxy failure; re-probing the node", "namespace", r.namespace, "pod", r.pod,
		"node", e.node.Name(), "prefix", clip(r.failure.GetPrefix(), 64), "err", text)
	return e
}

// recheck probes a reported node now and re-selects when it is dead.
func (m *Manager) recheck(ctx context.Context, e *entry) {
	defer func() {
		m.mu.Lock()
		e.checking = false
		m.mu.Unlock()
	}()
	if url := m.probeURL(); url != "" {
		m.probe(ctx, e, url)
	}
	m.mu.Lock()
	dead := !e.health.Alive
	m.mu.Unlock()
	if dead && ctx.Err() == nil {
		m.reselect(ctx, "edge failure report")
	}
}
