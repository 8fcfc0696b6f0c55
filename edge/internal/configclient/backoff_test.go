package configclient

import (
	"testing"
	"time"
)

func TestBackoffBounds(t *testing.T) {
	t.Parallel()
	b := backoff{base: 200 * time.Millisecond, max: 30 * time.Second}
	var sum time.Duration
	for i := 0; i < 1000; i++ {
		ceil := min(b.max, b.base<<min(i, 20))
		d := b.next()
		if d < 0 || d > ceil {
			t.Fatalf("attempt %d: delay %v outside [0, %v]", i, d, ceil)
		}
		if i >= 100 {
			sum += d
		}
	}
	// Capped attempts are uniform over [0, 30s]: the mean is near 15 s, so
	// the jitter really spreads (and a long outage never overflows).
	if mean := sum / 900; mean < 12*time.Second || mean > 18*time.Second {
		t.Fatalf("mean capped delay %v", mean)
	}
	b.reset()
	if d := b.next(); d > b.base {
		t.Fatalf("after reset: %v > base", d)
	}
}

func TestBackoffZero(t *testing.T) {
	t.Parallel()
	b := backoff{}
	if d := b.next(); d != 0 {
		t.Fatalf("zero backoff slept %v", d)
	}
}
