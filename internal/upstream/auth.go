package upstream

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// transportFor returns the authenticated RoundTripper for repository,
// building it (ping + token exchange) on first use. Concurrent first
// requests for one repository share one handshake, so a burst of layer
// pulls costs one token, not one per layer.
func (c *Client) transportFor(ctx context.Context, repository string) (http.RoundTripper, error) {
	scope := c.nameReg.Repo(repository).Scope(transport.PullScope)
	for {
		e, build := c.auths.acquire(scope, time.Now())
		if build {
			rt, err := transport.NewWithContext(ctx, c.nameReg, c.auth, c.base, []string{scope})
			c.auths.finish(scope, e, rt, err)
			if err == nil {
				c.log.DebugContext(ctx, "upstream auth transport ready", "scope", scope)
			}
			return rt, err
		}
		select {
		case <-e.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if e.err == nil {
			return e.rt, nil
		}
		// The request that ran the handshake gave up (its client went away);
		// that says nothing about the upstream, so run it again for this one.
		if ctx.Err() == nil && (errors.Is(e.err, context.Canceled) || errors.Is(e.err, context.DeadlineExceeded)) {
			continue
		}
		return nil, e.err
	}
}

// authCache is a bounded LRU of authenticated transports keyed by scope.
// It belongs to one Client: credentials never leak across upstreams or
// identities.
type authCache struct {
	mu      sync.Mutex
	max     int
	ttl     time.Duration
	entries map[string]*authEntry
}

type authEntry struct {
	ready    chan struct{} // closed when rt/err are set
	rt       http.RoundTripper
	err      error
	created  time.Time
	lastUsed time.Time // guarded by authCache.mu
}

func newAuthCache(size int, ttl time.Duration) *authCache {
	return &authCache{max: size, ttl: ttl, entries: make(map[string]*authEntry)}
}

// acquire returns the entry for scope. build is true when the caller must
// run the handshake and call finish.
func (a *authCache) acquire(scope string, now time.Time) (e *authEntry, build bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if e, ok := a.entries[scope]; ok {
		if !e.done() || (e.err == nil && (a.ttl <= 0 || now.Sub(e.created) < a.ttl)) {
			e.lastUsed = now
			return e, false
		}
		delete(a.entries, scope)
	}
	if len(a.entries) >= a.max {
		a.evictLocked()
	}
	e = &authEntry{ready: make(chan struct{}), created: now, lastUsed: now}
	a.entries[scope] = e
	return e, true
}

// finish publishes the handshake's result. A failed handshake is not kept:
// the next request tries again.
func (a *authCache) finish(scope string, e *authEntry, rt http.RoundTripper, err error) {
	e.rt, e.err = rt, err
	close(e.ready)
	if err != nil {
		a.mu.Lock()
		if a.entries[scope] == e {
			delete(a.entries, scope)
		}
		a.mu.Unlock()
	}
}

// evictLocked drops the least recently used finished entry. Entries whose
// handshake is in flight stay, so the map can exceed max only by the
// number of concurrent handshakes.
func (a *authCache) evictLocked() {
	var (
		oldestKey string
		oldest    *authEntry
	)
	for k, e := range a.entries {
		if !e.done() {
			continue
		}
		if oldest == nil || e.lastUsed.Before(oldest.lastUsed) {
			oldestKey, oldest = k, e
		}
	}
	if oldest != nil {
		delete(a.entries, oldestKey)
	}
}

func (e *authEntry) done() bool {
	select {
	case <-e.ready:
		return true
	default:
		return false
	}
}

func (a *authCache) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.entries)
}
