package clash

import (
	"slices"
	"time"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// Candidate is one node as a Selector sees it.
type Candidate struct {
	Name    string
	Alive   bool
	Latency time.Duration
}

// SelectInput is everything a selection depends on.
type SelectInput struct {
	Mode selfhostv1.ProxyMode
	// Pinned is the node of pinned mode.
	Pinned string
	// Previous is the order selected last time; it makes the selection
	// sticky.
	Previous []string
	// Nodes are the pool, in subscription order.
	Nodes []Candidate
}

// Selector orders nodes: the selected node first, then the fallback
// candidates. It returns no node in direct mode.
type Selector interface {
	Select(in SelectInput) []string
}

// Tolerance is how much faster a node must be to displace another: by
// more than Percent of the other's latency and by more than Min.
type Tolerance struct {
	Percent float64
	Min     time.Duration
}

// Beats tells whether a node with latency challenger displaces one with
// latency incumbent.
func (t Tolerance) Beats(challenger, incumbent time.Duration) bool {
	gain := incumbent - challenger
	return gain > t.Min && float64(gain) > float64(incumbent)*t.Percent/100
}

// DefaultFallbacks is how many candidates follow the selected node.
const DefaultFallbacks = 3

// ToleranceSelector is the Selector of the control plane.
//
//   - auto: slot by slot, the previous occupant (the first node of the
//     previous order still unplaced and alive) keeps the slot unless the
//     fastest unplaced alive node Beats it; so the selection changes when a
//     node dies or one is clearly faster, not with every probe's jitter.
//   - pinned: the pinned node first, alive or not (an operator's choice),
//     then fallbacks as in auto; a pinned node missing from the pool is
//     ignored (auto).
//   - direct: no node.
//
// Dead and never-probed nodes are never candidates.
type ToleranceSelector struct {
	Tolerance Tolerance
	// Fallbacks after the selected node; negative means none, zero
	// DefaultFallbacks.
	Fallbacks int
}

// Select implements Selector.
func (s ToleranceSelector) Select(in SelectInput) []string {
	if in.Mode == selfhostv1.ProxyMode_PROXY_MODE_DIRECT {
		return nil
	}
	fallbacks := s.Fallbacks
	switch {
	case fallbacks == 0:
		fallbacks = DefaultFallbacks
	case fallbacks < 0:
		fallbacks = 0
	}
	size := 1 + fallbacks
	var out []string
	if in.Mode == selfhostv1.ProxyMode_PROXY_MODE_PINNED &&
		slices.ContainsFunc(in.Nodes, func(c Candidate) bool { return c.Name == in.Pinned }) {
		out = append(out, in.Pinned)
	}
	var free []Candidate // alive, unplaced, in pool order
	for _, c := range in.Nodes {
		if c.Alive && !slices.Contains(out, c.Name) {
			free = append(free, c)
		}
	}
	for len(out) < size && len(free) > 0 {
		best := 0
		for i, c := range free {
			if c.Latency < free[best].Latency {
				best = i
			}
		}
		pick := best
		if inc := incumbent(in.Previous, free); inc >= 0 && !s.Tolerance.Beats(free[best].Latency, free[inc].Latency) {
			pick = inc
		}
		out = append(out, free[pick].Name)
		free = slices.Delete(free, pick, pick+1)
	}
	return out
}

// incumbent is the index in free of the first node of previous that is
// still free, or -1.
func incumbent(previous []string, free []Candidate) int {
	for _, name := range previous {
		if i := slices.IndexFunc(free, func(c Candidate) bool { return c.Name == name }); i >= 0 {
			return i
		}
	}
	return -1
}
