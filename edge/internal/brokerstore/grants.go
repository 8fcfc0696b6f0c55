package brokerstore

import (
	"sync"
	"time"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// grant is the broker's answer for one existing object in one scope.
type grant struct {
	key         string
	url         string // presigned GET; a secret while valid, never logged
	size        int64
	contentType string
	modTime     time.Time
	until       time.Time // reused until then
}

// grantID names a grant: the same object in another scope is another
// access decision.
func grantID(key string, scope *selfhostv1.ObjectScope) string {
	return key + "\x00" + scope.GetPrefix() + "\x00" + scope.GetRepository()
}

// grantCache keeps grants until they expire. It is small and bounded: when
// full, expired grants go first, then an arbitrary one (map order), which
// costs one more Authorize at worst.
type grantCache struct {
	mu  sync.Mutex
	max int
	m   map[string]grant
}

func newGrantCache(limit int) *grantCache { return &grantCache{max: limit, m: map[string]grant{}} }

func (c *grantCache) get(id string, now time.Time) (grant, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g, ok := c.m[id]
	if !ok {
		return grant{}, false
	}
	if !now.Before(g.until) {
		delete(c.m, id)
		return grant{}, false
	}
	return g, true
}

func (c *grantCache) put(id string, g grant, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[id]; !ok && len(c.m) >= c.max {
		for k, old := range c.m {
			if !now.Before(old.until) {
				delete(c.m, k)
			}
		}
		for k := range c.m {
			if len(c.m) < c.max {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[id] = g
}

// drop forgets every grant of key (in any scope): it was just written or
// deleted, so the size and type a grant remembers may be wrong.
func (c *grantCache) drop(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, g := range c.m {
		if g.key == key {
			delete(c.m, id)
		}
	}
}

// len returns the number of grants kept (tests).
func (c *grantCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
