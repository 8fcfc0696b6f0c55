package configclient

import (
	"math/rand/v2"
	"time"
)

// backoff is exponential backoff with full jitter: the n-th delay is drawn
// uniformly from [0, min(max, base·2^n)]. Full jitter spreads a fleet of
// edges that lost the same control plane over the whole window instead of
// having them reconnect in waves.
type backoff struct {
	base, max time.Duration
	attempt   int
}

func (b *backoff) next() time.Duration {
	ceil := b.max
	// Compared before shifting, so a long outage cannot overflow.
	if b.attempt < 63 && b.base > 0 && b.base <= b.max>>b.attempt {
		ceil = b.base << b.attempt
	}
	b.attempt++
	if ceil <= 0 {
		return 0
	}
	return rand.N(ceil + 1)
}

func (b *backoff) reset() { b.attempt = 0 }
