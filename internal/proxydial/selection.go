package proxydial

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/clashnode"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// Pool is the proxy part of one EdgeConfig, parsed.
type Pool struct {
	byName  map[string]*clashnode.Node
	skipped map[string]string // node name → why it is unusable
	// selection is what upstreams without an override use: the nodes in
	// preference order, or nil for direct.
	selection []*clashnode.Node
}

// ParseSelection builds the nodes of sel as the control plane sends them to
// edges (the control plane dials with the same pool when it asks upstreams
// for proofs of access). A node that does not parse is
// skipped and logged (one bad node never takes the others down); two nodes
// with one name are an error.
func ParseSelection(sel *selfhostv1.ProxySelection, log *slog.Logger) (*Pool, error) {
	pool := &Pool{byName: map[string]*clashnode.Node{}, skipped: map[string]string{}}
	var ordered []*clashnode.Node
	for i, pn := range sel.GetNodes() {
		field := fmt.Sprintf("proxy.nodes[%d]", i)
		if pn.GetName() == "" {
			return nil, fmt.Errorf("%s.name: empty", field)
		}
		if _, dup := pool.byName[pn.GetName()]; dup || pool.skipped[pn.GetName()] != "" {
			return nil, fmt.Errorf("%s.name: %q is used twice", field, pn.GetName())
		}
		n, err := clashnode.FromProto(pn)
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

// NodesFor resolves an upstream's proxy override against the pool: "" and
// "auto" follow the selection, "direct" dials directly, anything else
// names one node, which is then the only one (no fallback: an operator who
// pins an upstream to a node wants that path or none).
func (p *Pool) NodesFor(field, override string) ([]*clashnode.Node, error) {
	ov := strings.TrimSpace(override)
	switch {
	case ov == "" || strings.EqualFold(ov, "auto"):
		return p.selection, nil
	case strings.EqualFold(ov, "direct"):
		return nil, nil
	}
	if n, ok := p.byName[ov]; ok {
		return []*clashnode.Node{n}, nil
	}
	if why, ok := p.skipped[ov]; ok {
		return nil, fmt.Errorf("%s.proxy: node %q is not usable: %s", field, ov, why)
	}
	return nil, fmt.Errorf("%s.proxy: node %q is not among proxy.nodes", field, ov)
}
