package auth

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"time"
)

// resultCache holds reviews by the token's SHA-256, each until its own
// deadline, at most max of them.
type resultCache struct {
	mu      sync.Mutex
	max     int
	entries map[[sha256.Size]byte]cacheEntry
}

type cacheEntry struct {
	rv    outcome
	until time.Time
}

func newResultCache(size int) *resultCache {
	return &resultCache{max: size, entries: map[[sha256.Size]byte]cacheEntry{}}
}

func (c *resultCache) get(key [sha256.Size]byte, now time.Time) (outcome, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok {
		return outcome{}, false
	}
	if !now.Before(e.until) {
		delete(c.entries, key)
		return outcome{}, false
	}
	return e.rv, true
}

// put stores rv until the deadline. When the cache is full it drops the
// expired entries, then, if still full, the one closest to expiry: a burst
// of junk tokens costs their own reviews, not the other callers' entries
// for long.
func (c *resultCache) put(key [sha256.Size]byte, rv outcome, until, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[key]; !ok && len(c.entries) >= c.max {
		var (
			victim [sha256.Size]byte
			soon   time.Time
		)
		for k, e := range c.entries {
			if !now.Before(e.until) {
				delete(c.entries, k)
				continue
			}
			if soon.IsZero() || e.until.Before(soon) {
				victim, soon = k, e.until
			}
		}
		if len(c.entries) >= c.max {
			delete(c.entries, victim)
		}
	}
	c.entries[key] = cacheEntry{rv: rv, until: until}
}

func (c *resultCache) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// tokenExpiry reads the "exp" claim of a JWT without verifying it. It is
// only called for a token the apiserver has just authenticated, and only
// ever shortens how long the result is cached. Zero when there is none (a
// token that is not a JWT, such as a static token of the apiserver).
func tokenExpiry(token string) time.Time {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}
	}
	var claims struct {
		Exp json.Number `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return time.Time{}
	}
	exp, err := claims.Exp.Float64()
	if err != nil || exp <= 0 {
		return time.Time{}
	}
	return time.Unix(int64(exp), 0)
}
