package cache

import (
	"context"
	"sync"
)

// fillLimiter bounds the blob fills that transfer from upstream at once
// (the namespace policy's max_concurrent_fills, so that one tenant cannot
// starve the others; docs/security.md). Unlike
// x/sync/semaphore its limit changes at run time, when a new configuration
// arrives; fills already running are never interrupted by a lower limit,
// new ones just wait until the count is below it. The zero value is
// unlimited.
type fillLimiter struct {
	mu      sync.Mutex
	limit   int // 0: unlimited
	active  int
	waiters []chan struct{} // FIFO; closed when granted a slot
}

// acquire takes a slot, waiting in FIFO order while the limit is reached.
func (l *fillLimiter) acquire(ctx context.Context) error {
	l.mu.Lock()
	if l.limit <= 0 || l.active < l.limit {
		l.active++
		l.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	l.waiters = append(l.waiters, ch)
	l.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, w := range l.waiters {
		if w == ch {
			l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
			return ctx.Err()
		}
	}
	// Granted while we gave up: hand the slot on instead of leaking it.
	l.active--
	l.grantLocked()
	return ctx.Err()
}

// release returns a slot.
func (l *fillLimiter) release() {
	l.mu.Lock()
	l.active--
	l.grantLocked()
	l.mu.Unlock()
}

// setLimit changes the limit (0: unlimited) and wakes whoever now fits.
func (l *fillLimiter) setLimit(n int) {
	l.mu.Lock()
	l.limit = max(n, 0)
	l.grantLocked()
	l.mu.Unlock()
}

func (l *fillLimiter) grantLocked() {
	for len(l.waiters) > 0 && (l.limit <= 0 || l.active < l.limit) {
		close(l.waiters[0])
		l.waiters = l.waiters[1:]
		l.active++
	}
}

// acquireFillSlot takes a fill slot, waiting at most the fill queue wait:
// after it the fill fails with a *ThrottledError, so its requests get 429
// and come back later instead of queuing for as long as the fill timeout.
func (c *Cache) acquireFillSlot(ctx context.Context) error {
	if c.fillWait <= 0 {
		return c.limiter.acquire(ctx)
	}
	wctx, cancel := context.WithTimeout(ctx, c.fillWait)
	defer cancel()
	err := c.limiter.acquire(wctx)
	if err != nil && ctx.Err() == nil {
		c.m.UpstreamThrottled.WithLabelValues(ThrottleFills).Inc()
		return &ThrottledError{Reason: ThrottleFills, RetryAfter: c.fillWait}
	}
	return err
}

// SetMaxFills bounds the concurrent upstream blob fills of this cache;
// zero means unlimited. Requests for a blob whose fill waits for a slot
// wait with it, each until its own context ends; the waiting fill itself
// is detached from them like any fill: a client that goes away never
// cancels it.
func (c *Cache) SetMaxFills(n int) { c.limiter.setLimit(n) }
