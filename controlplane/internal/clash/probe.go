package clash

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/clashnode"
)

// Prober measures one node: it fetches url through the node and returns
// how long that took. Any HTTP response counts as alive (a registry's
// /v2/ answers 401 without credentials). Prober implementations must
// return by ctx's deadline.
type Prober interface {
	Probe(ctx context.Context, n *clashnode.Node, url string) (time.Duration, error)
}

// MihomoProber probes with mihomo's URLTest: a HEAD request through the
// node's adapter. URLTest sets no deadline of its own, so every call runs
// under ctx's, and a call that still has not returned a grace period
// after it is abandoned.
type MihomoProber struct {
	// Grace is how long past ctx's deadline a call may take before it is
	// abandoned (its goroutine finishes in the background).
	Grace time.Duration
}

// Probe implements Prober. The latency is measured here, in wall-clock
// time around URLTest, rather than taken from URLTest's whole
// milliseconds: loopback nodes answer in well under one.
func (p MihomoProber) Probe(ctx context.Context, n *clashnode.Node, url string) (time.Duration, error) {
	if _, ok := ctx.Deadline(); !ok {
		return 0, errors.New("probe without a deadline")
	}
	type result struct {
		d   time.Duration
		err error
	}
	done := make(chan result, 1)
	go func() {
		start := time.Now()
		err := n.URLTest(ctx, url)
		done <- result{time.Since(start), err}
	}()
	grace := p.Grace
	if grace <= 0 {
		grace = time.Second
	}
	select {
	case r := <-done:
		return r.d, r.err
	case <-ctx.Done():
	}
	select {
	case r := <-done:
		return r.d, r.err
	case <-time.After(grace):
		return 0, fmt.Errorf("%w (the probe did not give up; abandoned)", ctx.Err())
	}
}
