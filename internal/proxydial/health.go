package proxydial

import (
	"sync"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/clashnode"
)

// DefaultFailureMemory is how long a failed node is skipped by default.
const DefaultFailureMemory = 10 * time.Second

// Health remembers which nodes failed recently. One Health is shared by
// every Dialer of an edge, so a node found dead while reaching one upstream
// is skipped for the others too. The zero value is not usable; see
// NewHealth.
type Health struct {
	mu     sync.Mutex
	failed map[string]time.Time // node name → time of its last failure
	memory time.Duration
	now    func() time.Time
}

// NewHealth returns a Health that remembers a failure for memory
// (DefaultFailureMemory when memory <= 0).
func NewHealth(memory time.Duration) *Health {
	if memory <= 0 {
		memory = DefaultFailureMemory
	}
	return &Health{failed: map[string]time.Time{}, memory: memory, now: time.Now}
}

// MarkFailed records a failure of node now.
func (h *Health) MarkFailed(node string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failed[node] = h.now()
}

// MarkOK forgets the failures of node: it just carried a connection.
func (h *Health) MarkOK(node string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.failed, node)
}

// RecentlyFailed reports whether node failed within the failure memory.
func (h *Health) RecentlyFailed(node string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	at, ok := h.failed[node]
	if !ok {
		return false
	}
	if h.now().Sub(at) >= h.memory {
		delete(h.failed, node)
		return false
	}
	return true
}

// order returns nodes in their preference order with the recently failed
// ones moved to the end (keeping their relative order): they are tried only
// when every other node has failed too, so a request is never refused
// without a dial.
func (h *Health) order(nodes []*clashnode.Node) []*clashnode.Node {
	out := make([]*clashnode.Node, 0, len(nodes))
	var failed []*clashnode.Node
	for _, n := range nodes {
		if h.RecentlyFailed(n.Name()) {
			failed = append(failed, n)
			continue
		}
		out = append(out, n)
	}
	return append(out, failed...)
}
