package snapshot

import (
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// ProxySummary is the proxy selection of a Set as the admin API shows it.
type ProxySummary struct {
	// Mode in force.
	Mode selfhostv1.ProxyMode
	// Selected is the node edges dial first; empty in direct mode and when
	// no node is available.
	Selected string
	// Order is the selected node and the fallback candidates.
	Order []string
	// Missing are node names that upstreams' proxy overrides name but the
	// pool does not hold (any more); those upstreams follow the selection.
	Missing []string
}

// GetSelected returns the selected node, "" for a nil summary.
func (p *ProxySummary) GetSelected() string {
	if p == nil {
		return ""
	}
	return p.Selected
}

// proxySelection builds the ProxySelection every namespace receives, and
// the upstreams as edges receive them: an upstream whose proxy override
// names a node the pool does not hold is sent with proxy "auto" (its
// stored configuration keeps the name, so it comes back with the node).
// The selection lists Order's nodes first, then every node an upstream
// override names, so an edge can dial each node its upstreams use.
// Clash disabled: no selection, upstreams unchanged.
func proxySelection(st *config.State, ups []*selfhostv1.Upstream) (*selfhostv1.ProxySelection, []*selfhostv1.Upstream, *ProxySummary) {
	if !st.Clash.Enabled {
		return nil, ups, nil
	}
	mode := st.Clash.Mode
	if mode == selfhostv1.ProxyMode_PROXY_MODE_UNSPECIFIED {
		mode = selfhostv1.ProxyMode_PROXY_MODE_AUTO
	}
	var pool map[string]*selfhostv1.ProxyNode
	var order []string
	if st.Proxy != nil {
		pool = st.Proxy.Nodes
		if mode != selfhostv1.ProxyMode_PROXY_MODE_DIRECT {
			order = st.Proxy.Order
		}
	}
	sel := &selfhostv1.ProxySelection{Mode: mode}
	sum := &ProxySummary{Mode: mode}
	listed := map[string]bool{}
	for _, name := range order {
		if n, ok := pool[name]; ok && !listed[name] {
			listed[name] = true
			sel.Nodes = append(sel.Nodes, n)
			sum.Order = append(sum.Order, name)
		}
	}
	if len(sum.Order) > 0 {
		sum.Selected = sum.Order[0]
	}
	out, copied := ups, false
	for i, u := range ups {
		name := u.GetProxy()
		if !config.NamesNode(name) {
			continue
		}
		if n, ok := pool[name]; ok {
			if !listed[name] {
				listed[name] = true
				sel.Nodes = append(sel.Nodes, n)
			}
			continue
		}
		if !slices.Contains(sum.Missing, name) {
			sum.Missing = append(sum.Missing, name)
		}
		if !copied {
			out, copied = slices.Clone(ups), true // ups is shared: copy on first write
		}
		c := proto.CloneOf(u)
		c.Proxy = config.ProxyAuto
		out[i] = c
	}
	return sel, out, sum
}
