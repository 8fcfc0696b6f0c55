package configstore

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/snapshot"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/configspec"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// PutUpstream adds u, or replaces the upstream with the same prefix.
// Errors name the field of u as "upstream.<field>"; they wrap
// configspec.ErrInvalid for a bad or conflicting upstream.
func (s *Store) PutUpstream(ctx context.Context, u *selfhostv1.Upstream) (*snapshot.Set, error) {
	if err := configspec.ValidateUpstream("upstream", u); err != nil {
		return nil, fmt.Errorf("put upstream: %w", err)
	}
	if err := config.CheckUpstreamProxy("upstream.proxy", u.GetProxy()); err != nil {
		return nil, fmt.Errorf("put upstream: %w: %w", configspec.ErrInvalid, err)
	}
	u = proto.CloneOf(u)
	return s.Update(ctx, "put upstream "+u.GetPrefix(), func(st *config.State) error {
		if err := checkConflicts(u, st.Upstreams); err != nil {
			return err
		}
		if err := checkProxyNode(u.GetProxy(), st); err != nil {
			return err
		}
		i := slices.IndexFunc(st.Upstreams, func(o *selfhostv1.Upstream) bool { return o.GetPrefix() == u.GetPrefix() })
		if i >= 0 {
			st.Upstreams[i] = u
		} else {
			st.Upstreams = append(st.Upstreams, u)
		}
		return nil
	})
}

// DeleteUpstream removes the upstream with the given prefix. It is
// ErrNotFound when there is none and ErrInUse while a namespace's allowed
// prefixes name it (deleting it would silently widen or break that
// namespace's policy).
func (s *Store) DeleteUpstream(ctx context.Context, prefix string) (*snapshot.Set, error) {
	if prefix == "" {
		return nil, fmt.Errorf("delete upstream: %w: prefix: must not be empty", configspec.ErrInvalid)
	}
	return s.Update(ctx, "delete upstream "+prefix, func(st *config.State) error {
		i := slices.IndexFunc(st.Upstreams, func(o *selfhostv1.Upstream) bool { return o.GetPrefix() == prefix })
		if i < 0 {
			return fmt.Errorf("%w: prefix: no upstream %q", ErrNotFound, prefix)
		}
		for _, name := range st.NamespaceNames() {
			if slices.Contains(st.Namespaces[name].AllowedPrefixes, prefix) {
				return fmt.Errorf("%w: prefix: upstream %q is in namespaces.%s.allowedPrefixes", ErrInUse, prefix, name)
			}
		}
		st.Upstreams = slices.Delete(st.Upstreams, i, i+1)
		return nil
	})
}

// checkConflicts reports a prefix, alias or host of u that another
// upstream already claims, naming u's field.
func checkConflicts(u *selfhostv1.Upstream, others []*selfhostv1.Upstream) error {
	names := map[string]string{}
	hosts := map[string]string{}
	for _, o := range others {
		if o.GetPrefix() == u.GetPrefix() {
			continue // being replaced
		}
		for _, n := range append([]string{o.GetPrefix()}, o.GetAliases()...) {
			names[n] = o.GetPrefix()
		}
		for _, h := range o.GetHosts() {
			hosts[strings.ToLower(h)] = o.GetPrefix()
		}
		if h := urlHost(o.GetUrl()); h != "" {
			if _, listed := hosts[h]; !listed {
				hosts[h] = o.GetPrefix()
			}
		}
	}
	if other, ok := names[u.GetPrefix()]; ok {
		return fmt.Errorf("%w: upstream.prefix: %q is already an alias of upstream %q", configspec.ErrInvalid, u.GetPrefix(), other)
	}
	own := map[string]bool{u.GetPrefix(): true}
	for i, a := range u.GetAliases() {
		if other, ok := names[a]; ok {
			return fmt.Errorf("%w: upstream.aliases[%d]: %q is already used by upstream %q", configspec.ErrInvalid, i, a, other)
		}
		if own[a] {
			return fmt.Errorf("%w: upstream.aliases[%d]: %q is listed twice", configspec.ErrInvalid, i, a)
		}
		own[a] = true
	}
	for i, h := range u.GetHosts() {
		if other, ok := hosts[strings.ToLower(h)]; ok {
			return fmt.Errorf("%w: upstream.hosts[%d]: %q already selects upstream %q", configspec.ErrInvalid, i, h, other)
		}
	}
	return nil
}

// checkProxyNode refuses an upstream.proxy that names a node the current
// pool does not hold: an override must name a node the edges can dial.
func checkProxyNode(name string, st *config.State) error {
	if !config.NamesNode(name) {
		return nil
	}
	switch {
	case !st.Clash.Enabled:
		return fmt.Errorf("%w: upstream.proxy: names node %q, but Clash is not enabled (use \"auto\" or \"direct\")", configspec.ErrInvalid, name)
	case st.Proxy == nil:
		return fmt.Errorf("%w: upstream.proxy: no node %q: the subscription has not been fetched yet", configspec.ErrInvalid, name)
	}
	if _, ok := st.Proxy.Nodes[name]; !ok {
		return fmt.Errorf("%w: upstream.proxy: no node %q in the subscription (ListProxyNodes shows the names)", configspec.ErrInvalid, name)
	}
	return nil
}

func urlHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return strings.ToLower(u.Host)
}
