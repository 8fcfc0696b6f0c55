package cache

import (
	"context"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream"
)

// Upstreams gives the fetcher of an upstream prefix. The control client
// swaps the edge's configuration; a request keeps the Upstreams it was
// routed with (see WithUpstreams).
type Upstreams interface {
	Fetcher(prefix string) (upstream.Fetcher, bool)
}

// TagTTLs is optionally implemented by an Upstreams whose upstreams carry
// their own tag TTL; ok == false means the Cache's default (WithTagTTL).
type TagTTLs interface {
	TagTTL(prefix string) (ttl time.Duration, ok bool)
}

type upstreamsKey struct{}

// WithUpstreams returns a context under which cache calls use ups instead
// of the Upstreams the Cache was built with. The registry handler pins the
// configuration snapshot it parsed the request with, so a configuration
// swap in the middle of a pull never mixes two snapshots — including the
// blob fill that outlives the request (it runs under
// context.WithoutCancel, which keeps values).
func WithUpstreams(ctx context.Context, ups Upstreams) context.Context {
	return context.WithValue(ctx, upstreamsKey{}, ups)
}

// upstreamsFor returns the Upstreams pinned in ctx, else the Cache's own.
func (c *Cache) upstreamsFor(ctx context.Context) Upstreams {
	if ups, ok := ctx.Value(upstreamsKey{}).(Upstreams); ok && ups != nil {
		return ups
	}
	return c.upstreams
}

// tagTTLFor is how long prefix's tags are trusted before revalidation.
func (c *Cache) tagTTLFor(ctx context.Context, prefix string) time.Duration {
	if t, ok := c.upstreamsFor(ctx).(TagTTLs); ok {
		if ttl, ok := t.TagTTL(prefix); ok {
			return ttl
		}
	}
	return c.tagTTL
}
