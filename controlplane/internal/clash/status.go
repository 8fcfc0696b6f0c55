package clash

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// Status is the pool as the admin API shows it: no secrets.
type Status struct {
	// Mode in force (committed).
	Mode selfhostv1.ProxyMode
	// Nodes in subscription order.
	Nodes []NodeStatus
	// Skipped entries of the last successful fetch.
	Skipped []Skipped
	// Fetched is when the subscription was last fetched successfully.
	Fetched time.Time
	// FetchError of the last fetch, empty after a success; scrubbed of the
	// subscription URL.
	FetchError string
}

// NodeStatus is one node and its health.
type NodeStatus struct {
	Name, Type, Server string
	Health
	// Selected: edges dial this node first.
	Selected bool
}

// RefreshResult is what a Refresh found.
type RefreshResult struct {
	Nodes   int
	Skipped []Skipped
}

// Status returns the pool, its health and the committed selection.
func (m *Manager) Status() Status {
	sel := m.opts.ConfigStore.Current().Proxy
	m.mu.Lock()
	defer m.mu.Unlock()
	st := Status{Skipped: slices.Clone(m.skipped), Fetched: m.fetched, FetchError: m.fetchErr}
	if sel != nil {
		st.Mode = sel.Mode
	}
	if m.pool != nil {
		for _, e := range m.pool.entries {
			st.Nodes = append(st.Nodes, m.nodeStatusLocked(e, sel.GetSelected()))
		}
	}
	return st
}

func (m *Manager) nodeStatusLocked(e *entry, selected string) NodeStatus {
	return NodeStatus{Name: e.node.Name(), Type: e.node.Type(), Server: e.node.Server(), Health: e.health.clone(), Selected: e.node.Name() == selected}
}

// Refresh fetches the subscription and probes the new pool now. On
// failure (wrapping ErrSubscription, scrubbed of the URL) the pool in use
// is kept.
func (m *Manager) Refresh(ctx context.Context) (RefreshResult, error) {
	sub, err := m.refresh(ctx)
	if err != nil {
		return RefreshResult{}, err
	}
	return RefreshResult{Nodes: len(sub.Nodes), Skipped: sub.Skipped}, nil
}

// Select pins the named node: the mode becomes pinned, persisted.
func (m *Manager) Select(ctx context.Context, name string) (NodeStatus, error) {
	set, err := m.opts.ConfigStore.Update(ctx, "select proxy node", func(st *config.State) error {
		if !m.hasNode(name) {
			return fmt.Errorf("%w: %q is not in the subscription (ListProxyNodes shows the names)", ErrUnknownNode, name)
		}
		st.Clash.Mode, st.Clash.Pinned, st.Clash.ModeFromRuntime = selfhostv1.ProxyMode_PROXY_MODE_PINNED, name, true
		if v := m.view(st); v != nil {
			st.Proxy = v
		}
		return nil
	})
	if err != nil {
		return NodeStatus{}, err
	}
	m.log.Info("proxy node pinned", "node", name, "selected", set.Proxy.GetSelected())
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pool != nil {
		if e, ok := m.pool.byName[name]; ok {
			return m.nodeStatusLocked(e, set.Proxy.GetSelected()), nil
		}
	}
	return NodeStatus{Name: name, Selected: set.Proxy.GetSelected() == name}, nil
}

// SetMode switches to auto, pinned or direct, persisted. Pinned needs a
// node pinned before (Select) that is still in the pool.
func (m *Manager) SetMode(ctx context.Context, mode selfhostv1.ProxyMode) (selfhostv1.ProxyMode, error) {
	switch mode {
	case selfhostv1.ProxyMode_PROXY_MODE_AUTO, selfhostv1.ProxyMode_PROXY_MODE_PINNED, selfhostv1.ProxyMode_PROXY_MODE_DIRECT:
	default:
		return 0, fmt.Errorf("mode %v: want auto, pinned or direct", mode)
	}
	set, err := m.opts.ConfigStore.Update(ctx, "set proxy mode", func(st *config.State) error {
		if mode == selfhostv1.ProxyMode_PROXY_MODE_PINNED {
			switch {
			case st.Clash.Pinned == "":
				return fmt.Errorf("%w: no node was selected; call SelectProxyNode, which also sets the mode", ErrNoPinnedNode)
			case !m.hasNode(st.Clash.Pinned):
				return fmt.Errorf("%w: the last pinned node %q is not in the subscription any more; call SelectProxyNode", ErrNoPinnedNode, st.Clash.Pinned)
			}
		}
		st.Clash.Mode, st.Clash.ModeFromRuntime = mode, true
		if v := m.view(st); v != nil {
			st.Proxy = v
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	m.log.Info("proxy mode set", "mode", config.ProxyModeName(mode), "selected", set.Proxy.GetSelected())
	return mode, nil
}

func (m *Manager) hasNode(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pool == nil {
		return false
	}
	_, ok := m.pool.byName[name]
	return ok
}
