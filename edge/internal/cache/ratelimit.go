package cache

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// ErrThrottled is matched (errors.Is) by every *ThrottledError.
var ErrThrottled = errors.New("too many upstream requests")

// Reasons of a ThrottledError, also the label of the edge's
// edge_upstream_throttled_total metric.
const (
	ThrottleRate  = "rate"  // the namespace's upstream request rate
	ThrottleFills = "fills" // every fill slot stayed busy for the queue wait
)

// ThrottledError refuses a request that needs the upstream because the
// namespace's share of it is used up. The registry answers it with 429
// TOOMANYREQUESTS and Retry-After; content already in storage is served
// without it.
type ThrottledError struct {
	Reason     string
	RetryAfter time.Duration
}

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("%s (%s limit), retry after %s", ErrThrottled, e.Reason, e.RetryAfter)
}

// Is makes errors.Is(err, ErrThrottled) true.
func (e *ThrottledError) Is(target error) bool { return target == ErrThrottled }

// tokenBucket limits the upstream requests of one edge (= one namespace:
// its tenant's pulls cannot use up the upstream's rate limits and the
// shared egress for everyone). Rate and burst change at run time with
// the configuration. Unlike a waiting limiter it never blocks: a request
// without a token is refused with the time until one is there, which the
// client is told to wait instead of holding a connection. The zero value
// is unlimited.
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64 // tokens per second; 0: unlimited
	burst  float64
	tokens float64
	last   time.Time
}

// set changes the rate (per second) and the burst; rate 0 is unlimited,
// burst 0 means the rate (one second's worth). A changed bucket starts
// full, so a new configuration never refuses what the old one allowed.
func (b *tokenBucket) set(rate, burst int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r, bu := float64(max(rate, 0)), float64(max(burst, 0))
	if bu == 0 {
		bu = max(r, 1)
	}
	if r == b.rate && bu == b.burst {
		return
	}
	b.rate, b.burst, b.tokens, b.last = r, bu, bu, time.Time{}
}

// take takes one token at now; without one it returns false and how long
// until one is there.
func (b *tokenBucket) take(now time.Time) (bool, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rate == 0 {
		return true, 0
	}
	if !b.last.IsZero() && now.After(b.last) {
		b.tokens = math.Min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	if b.last.IsZero() || now.After(b.last) {
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
	return false, wait
}

// SetUpstreamRate sets the namespace's upstream request rate (per second)
// and burst; rate 0 is unlimited, burst 0 allows one second's worth. The
// edge sets them from its policy, or from --max-upstream-rps and
// --upstream-burst when the policy leaves them zero.
func (c *Cache) SetUpstreamRate(rate, burst int) { c.bucket.set(rate, burst) }

// allowUpstream takes a token for one upstream request of kind (manifest,
// blob, tags) or returns a *ThrottledError. Only requests that reach the
// upstream call it: followers of a shared fill or manifest fetch do not.
func (c *Cache) allowUpstream(kind string) error {
	ok, wait := c.bucket.take(c.now())
	if ok {
		return nil
	}
	c.m.UpstreamThrottled.WithLabelValues(ThrottleRate).Inc()
	c.log.Debug("upstream request refused by the namespace's rate limit", "kind", kind, "retry_after", wait)
	return &ThrottledError{Reason: ThrottleRate, RetryAfter: wait}
}
