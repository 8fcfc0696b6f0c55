// Package cache is the edge's pull-through logic (edge/README.md, "How a
// pull goes through the edge" and "Storage"): it answers manifests and blobs
// from the blob.Store, and on a miss fetches them from the upstream,
// verifies them, streams them to the client and stores them for next time.
//
// Manifests are small: they are fetched whole, verified and stored before
// they are served. Blobs are streamed: one fill per blob runs detached from
// the requests that caused it, writes a spool and the store at once, and
// every request for that blob follows the spool (see fill.go).
package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/metrics"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream"
)

// ErrUnknownUpstream means a route names a prefix with no configured upstream.
var ErrUnknownUpstream = errors.New("no upstream for prefix")

// Cache is the pull-through cache of one namespace.
type Cache struct {
	store      blob.Store
	namespace  string
	tagTTL     time.Duration
	fillTTL    time.Duration
	requestTTL time.Duration
	spoolDir   string
	retryAt    atomic.Int64 // unix nanos before which storage is bypassed
	// futureWarned is set once a tag record from the future was logged.
	futureWarned atomic.Bool
	log          *slog.Logger
	m            *metrics.Metrics
	now          func() time.Time

	fills   fillSet
	running fillWaiter
	limiter fillLimiter
	// fillWait bounds a fill's wait for a slot (0: until fillTTL).
	fillWait time.Duration
	bucket   tokenBucket
	flights  singleflight.Group
}

// Option configures a Cache.
type Option func(*Cache)

// WithTagTTL sets how long a tag mapping is trusted before it is revalidated
// upstream with HEAD.
func WithTagTTL(d time.Duration) Option { return func(c *Cache) { c.tagTTL = d } }

// WithFillTimeout bounds one upstream blob transfer.
func WithFillTimeout(d time.Duration) Option { return func(c *Cache) { c.fillTTL = d } }

// WithSpoolDir sets where in-flight fills are spooled (default os.TempDir).
func WithSpoolDir(dir string) Option { return func(c *Cache) { c.spoolDir = dir } }

// WithFillQueueWait bounds how long a cold blob's fill waits for a slot
// when the namespace's concurrent fills are all busy; then its requests
// get 429 with Retry-After instead of holding connections (0: wait as
// long as the fill timeout).
func WithFillQueueWait(d time.Duration) Option { return func(c *Cache) { c.fillWait = d } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(c *Cache) { c.log = l } }

// WithClock replaces time.Now (tests of tag freshness).
func WithClock(now func() time.Time) Option { return func(c *Cache) { c.now = now } }

// New returns a Cache for namespace over store. It holds no upstreams:
// every call that may reach one takes the request's configuration snapshot
// (Upstreams) as an argument.
func New(store blob.Store, namespace string, m *metrics.Metrics, opts ...Option) (*Cache, error) {
	if namespace == "" {
		return nil, errors.New("cache: namespace must not be empty")
	}
	c := &Cache{
		store: store, namespace: namespace, m: m,
		tagTTL: 5 * time.Minute, fillTTL: time.Hour, requestTTL: 2 * time.Minute, spoolDir: os.TempDir(),
		log: slog.Default(), now: time.Now,
	}
	for _, o := range opts {
		o(c)
	}
	if err := os.MkdirAll(c.spoolDir, 0o700); err != nil {
		return nil, fmt.Errorf("cache: spool dir: %w", err)
	}
	return c, nil
}

// storageBackoff is how long the store is bypassed after a failure before
// it is tried again.
const storageBackoff = 5 * time.Second

// storeUsable reports whether the store should be tried.
func (c *Cache) storeUsable() bool {
	return c.now().UnixNano() >= c.retryAt.Load()
}

// storageFault records a storage failure: pulls bypass storage for a while
// (degraded: streamed from upstream without caching).
func (c *Cache) storageFault(op string, err error) {
	c.m.StorageErrors.WithLabelValues(op).Inc()
	prev := c.retryAt.Swap(c.now().Add(storageBackoff).UnixNano())
	if prev < c.now().UnixNano() {
		c.log.Warn("storage failing, serving from upstream without caching", "op", op, "err", err)
	}
	c.m.StorageDegraded.Set(1)
}

// storageOK clears the degraded state after a successful operation.
func (c *Cache) storageOK() {
	if c.retryAt.Load() != 0 && c.storeUsable() {
		if c.retryAt.Swap(0) != 0 {
			c.log.Info("storage recovered")
		}
		c.m.StorageDegraded.Set(0)
	}
}

// Degraded reports whether storage is currently bypassed.
func (c *Cache) Degraded() bool { return !c.storeUsable() }

// storeFailed records a failed store operation. A refusal by the storage
// broker (blob.ErrDenied: no proof of access in this pull's scope) costs
// only the caching of this one object, so it never degrades the storage;
// anything else is a storage fault.
func (c *Cache) storeFailed(op string, err error) {
	if errors.Is(err, blob.ErrDenied) {
		c.m.StorageDenied.WithLabelValues(op).Inc()
		c.log.Debug("storage broker refused; going without the cache for this object", "op", op, "err", err)
		return
	}
	c.storageFault(op, err)
}

// CheckStorage probes the store (readiness). A not-found answer is healthy,
// and so is a refusal: the broker that refused is up. The key is one of
// the namespace's own records that never exists ("." cannot appear in an
// upstream prefix), so the storage broker answers it without a scope.
func (c *Cache) CheckStorage(ctx context.Context) error {
	_, err := c.store.Stat(ctx, "tenants/"+c.namespace+"/health.probe")
	if errors.Is(err, blob.ErrDenied) {
		c.m.StorageDenied.WithLabelValues("probe").Inc()
		err = nil
	}
	if err != nil && !errors.Is(err, blob.ErrNotFound) {
		c.storageFault("probe", err)
		return fmt.Errorf("storage probe: %w", err)
	}
	c.storageOK()
	return nil
}

// countUpstream records an upstream request and, when it failed, its error.
func (c *Cache) countUpstream(prefix, kind, method string, err error) {
	c.m.UpstreamRequests.WithLabelValues(prefix, kind, method).Inc()
	if err == nil {
		return
	}
	code := "network"
	var se *upstream.StatusError
	switch {
	case errors.As(err, &se):
		code = fmt.Sprint(se.Status)
	case errors.Is(err, upstream.ErrDigestMismatch):
		code = "digest_mismatch"
	case errors.Is(err, upstream.ErrTooLarge):
		code = "too_large"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		code = "timeout"
	}
	c.m.UpstreamErrors.WithLabelValues(prefix, code).Inc()
}
