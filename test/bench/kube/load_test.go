//go:build bench

package kube

import (
	"sync"
	"time"
)

// armResult is what one arm of an open-loop run measured.
type armResult struct {
	lat      []time.Duration
	errs     int
	firstErr error
}

// openLoop sends requests at a fixed rate regardless of how long they
// take (open loop: a slow answer does not delay the next request, so
// queueing shows in the latencies). The arms take turns in blocks of
// block: arm 0, arm 1, …, then the next round in reverse order, until
// each arm ran perArm at rate requests per second. Latency runs from the
// request's scheduled time (not the moment its goroutine got going) to
// do's return. do(arm, i) gets the arm and the arm's request number.
func openLoop(arms, rate int, perArm, block time.Duration, do func(arm, i int) error) []armResult {
	perBlock := max(1, int(float64(rate)*block.Seconds()))
	blocks := max(1, int(perArm/block))
	interval := time.Second / time.Duration(rate)
	res := make([]armResult, arms)
	next := make([]int, arms)
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now().Add(50 * time.Millisecond)
	n := 0
	for round := range blocks {
		for a := range arms {
			arm := a
			if round%2 == 1 {
				arm = arms - 1 - a
			}
			for range perBlock {
				at := start.Add(time.Duration(n) * interval)
				n++
				time.Sleep(time.Until(at))
				i := next[arm]
				next[arm]++
				wg.Add(1)
				go func() {
					defer wg.Done()
					err := do(arm, i)
					lat := time.Since(at)
					mu.Lock()
					defer mu.Unlock()
					r := &res[arm]
					if err != nil {
						r.errs++
						if r.firstErr == nil {
							r.firstErr = err
						}
						return
					}
					r.lat = append(r.lat, lat)
				}()
			}
		}
	}
	wg.Wait()
	return res
}
