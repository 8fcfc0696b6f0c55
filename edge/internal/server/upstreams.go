package server

import (
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/route"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/upstream"
)

// upstreamSnapshot is one immutable routing table with its clients. A new
// configuration replaces the whole snapshot at once, so a request that
// already resolved its route keeps a consistent view.
type upstreamSnapshot struct {
	table    *route.Table
	fetchers map[string]upstream.Fetcher
}

// upstreamSet serves the current snapshot to the router and the cache.
type upstreamSet struct {
	cur atomic.Pointer[upstreamSnapshot]
}

func (s *upstreamSet) Table() *route.Table { return s.cur.Load().table }

func (s *upstreamSet) Fetcher(prefix string) (upstream.Fetcher, bool) {
	f, ok := s.cur.Load().fetchers[prefix]
	return f, ok
}

// buildSnapshot makes one upstream client per canonical prefix.
func buildSnapshot(t *route.Table, creds map[string]Credentials, log *slog.Logger, opts ...upstream.Option) (*upstreamSnapshot, error) {
	snap := &upstreamSnapshot{table: t, fetchers: map[string]upstream.Fetcher{}}
	for p := range creds {
		u, ok := t.Lookup(p)
		if !ok {
			return nil, fmt.Errorf("credentials for unknown upstream prefix %q", p)
		}
		if u.Prefix != p {
			return nil, fmt.Errorf("credentials for %q: use the upstream's prefix %q, not an alias", p, u.Prefix)
		}
	}
	for _, u := range t.Upstreams() {
		c := creds[u.Prefix]
		client, err := upstream.New(upstream.Registry{Prefix: u.Prefix, URL: u.URL, Username: c.Username, Password: c.Password},
			append([]upstream.Option{upstream.WithLogger(log.With("upstream", u.Prefix))}, opts...)...)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", u.Prefix, err)
		}
		snap.fetchers[u.Prefix] = client
	}
	return snap, nil
}
