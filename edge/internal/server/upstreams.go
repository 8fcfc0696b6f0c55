package server

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/registry"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/route"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/clashnode"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream"
)

// upstreamSnapshot is one immutable configuration: routing table, one
// client per upstream, per-upstream tag TTLs and the namespace policy. A new
// configuration replaces the whole snapshot at once, and a request keeps
// the snapshot it was routed with (registry.Routes), so no pull ever mixes
// two configurations.
type upstreamSnapshot struct {
	version  string // control-plane version; "" for the flag defaults
	table    *route.Table
	fetchers map[string]upstream.Fetcher
	clients  map[clientKey]*upstream.Client // for reuse by the next snapshot
	tagTTL   map[string]time.Duration       // only upstreams that set one
	policy   registry.Policy
}

var _ registry.Snapshot = (*upstreamSnapshot)(nil)

func (s *upstreamSnapshot) Table() *route.Table     { return s.table }
func (s *upstreamSnapshot) Policy() registry.Policy { return s.policy }

func (s *upstreamSnapshot) Fetcher(prefix string) (upstream.Fetcher, bool) {
	f, ok := s.fetchers[prefix]
	return f, ok
}

// TagTTL implements cache.TagTTLs.
func (s *upstreamSnapshot) TagTTL(prefix string) (time.Duration, bool) {
	d, ok := s.tagTTL[prefix]
	return d, ok
}

// upstreamSet holds the current snapshot. The registry handler loads it
// once per request and passes it to every cache call of that request.
type upstreamSet struct {
	cur atomic.Pointer[upstreamSnapshot]
}

// Current implements registry.Routes: nil (an untyped nil, so the handler
// sees it) while no snapshot is installed.
func (s *upstreamSet) Current() registry.Snapshot {
	if snap := s.cur.Load(); snap != nil {
		return snap
	}
	return nil
}

// clientKey is everything an upstream client is built from: a client whose
// key is unchanged is carried over to the next snapshot, keeping its
// connections and cached registry tokens across configuration pushes. A
// new proxy node list for the upstream is a new client (and new
// connections, through the new nodes).
type clientKey struct {
	prefix, url, username, password string
	proxy                           string // proxyKey of the node list; "" direct
}

// upstreamSpec is one upstream to build a client for.
type upstreamSpec struct {
	field string // for errors: "upstreams[2]" or "--upstream dockerhub"
	route route.Upstream
	creds Credentials
	nodes []*clashnode.Node // proxy nodes in order; nil dials directly
	// internalRedirects lifts the redirect address-class rule for this
	// upstream (--allow-internal-redirects).
	internalRedirects bool
}

// buildClients makes one upstream client per canonical prefix, reusing the
// clients of prev whose configuration is unchanged.
func buildClients(snap *upstreamSnapshot, specs []upstreamSpec, prev *upstreamSnapshot, px *proxies, log *slog.Logger, opts ...upstream.Option) error {
	snap.fetchers = map[string]upstream.Fetcher{}
	snap.clients = map[clientKey]*upstream.Client{}
	for _, sp := range specs {
		key := clientKey{sp.route.Prefix, sp.route.URL.String(), sp.creds.Username, sp.creds.Password, proxyKey(sp.nodes)}
		client := (*upstream.Client)(nil)
		if prev != nil {
			client = prev.clients[key]
		}
		if client == nil {
			dial, err := px.dialOption(sp.route.Prefix, sp.nodes)
			if err != nil {
				return fmt.Errorf("%s: %w", sp.field, err)
			}
			copts := append([]upstream.Option{upstream.WithLogger(log.With("upstream", sp.route.Prefix))}, opts...)
			if sp.internalRedirects {
				copts = append(copts, upstream.WithInternalRedirects())
			}
			client, err = upstream.New(upstream.Registry{Prefix: sp.route.Prefix, URL: sp.route.URL, Username: sp.creds.Username, Password: sp.creds.Password},
				append(copts, dial...)...)
			if err != nil {
				return fmt.Errorf("%s: %w", sp.field, err)
			}
			if len(sp.nodes) > 0 {
				log.Info("upstream dials through proxy nodes", "upstream", sp.route.Prefix, "nodes", nodeNames(sp.nodes))
			}
		}
		snap.fetchers[sp.route.Prefix] = client
		snap.clients[key] = client
	}
	return nil
}

// retire releases the idle connections of the clients of old that next no
// longer uses. Requests still running on old keep working: Close only drops
// idle connections.
func retire(old, next *upstreamSnapshot) {
	if old == nil {
		return
	}
	for k, c := range old.clients {
		if next.clients[k] != c {
			c.Close()
		}
	}
}

// flagSnapshot builds the snapshot of the flag defaults: table plus the
// credentials file, every upstream dialling through nodes (--proxy; nil:
// directly).
func flagSnapshot(t *route.Table, creds map[string]Credentials, nodes []*clashnode.Node, allowInternal map[string]bool, px *proxies, log *slog.Logger, opts ...upstream.Option) (*upstreamSnapshot, error) {
	for p := range creds {
		if _, ok := t.Lookup(p); !ok {
			return nil, fmt.Errorf("credentials for unknown upstream prefix %q", p)
		}
	}
	snap := &upstreamSnapshot{table: t}
	var specs []upstreamSpec
	for _, u := range t.Upstreams() {
		specs = append(specs, upstreamSpec{field: "upstream " + u.Prefix, route: u, creds: creds[u.Prefix], nodes: nodes,
			internalRedirects: allowInternal[u.Prefix]})
	}
	if err := buildClients(snap, specs, nil, px, log, opts...); err != nil {
		return nil, err
	}
	return snap, nil
}

// nodeNames lists the names of nodes, for logs.
func nodeNames(nodes []*clashnode.Node) []string {
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.Name()
	}
	return names
}
