package cache

import (
	"errors"
	"fmt"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream"
)

// Upstreams gives the fetcher of an upstream prefix: one configuration
// snapshot of the edge. The control client swaps the edge's configuration;
// a request resolves its snapshot once and hands the same Upstreams to
// every cache call it makes, including the blob fill that outlives it, so
// a configuration swap in the middle of a pull never mixes two snapshots.
type Upstreams interface {
	Fetcher(prefix string) (upstream.Fetcher, bool)
}

// TagTTLs is optionally implemented by an Upstreams whose upstreams carry
// their own tag TTL; ok == false means the Cache's default (WithTagTTL).
type TagTTLs interface {
	TagTTL(prefix string) (ttl time.Duration, ok bool)
}

// ErrNoSnapshot is a cache call made without a configuration snapshot
// (nil Upstreams): a programming error of the caller. The Cache has no
// snapshot of its own to fall back to.
var ErrNoSnapshot = errors.New("no configuration snapshot for this request")

// fetcher returns the fetcher of prefix in ups.
func fetcher(ups Upstreams, prefix string) (upstream.Fetcher, error) {
	if ups == nil {
		return nil, ErrNoSnapshot
	}
	f, ok := ups.Fetcher(prefix)
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownUpstream, prefix)
	}
	return f, nil
}

// tagTTLFor is how long prefix's tags are trusted before revalidation.
func (c *Cache) tagTTLFor(ups Upstreams, prefix string) time.Duration {
	if t, ok := ups.(TagTTLs); ok {
		if ttl, ok := t.TagTTL(prefix); ok {
			return ttl
		}
	}
	return c.tagTTL
}
