package testkit

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// Cond is what WaitFor and Poll wait on: a func() bool, or a func()
// error whose last error the failure shows (the state the test saw
// last, not just "timed out").
type Cond interface {
	func() bool | func() error
}

// The first retry comes after minBackoff and each later one waits twice
// as long, up to maxBackoff: a condition that holds within a millisecond
// costs a millisecond, one that takes seconds costs few calls. A pause is
// never shorter than the call before it took, so an expensive condition
// (a process spawned per check) uses at most half of a core.
const (
	minBackoff = time.Millisecond
	maxBackoff = 50 * time.Millisecond
)

// errNotYet is the last error of a func() bool condition that never held.
var errNotYet = errors.New("condition still false")

// WaitFor calls cond at once and then with a short backoff until it
// holds (true, or a nil error), and fails the test naming what and the
// last error when it still does not after timeout. The timeout is
// liveness, not speed: give loaded machines room. Inside a
// testing/synctest bubble the backoff sleeps on the bubble's fake clock.
func WaitFor[C Cond](t testing.TB, what string, timeout time.Duration, cond C) {
	t.Helper()
	// Not t.Context(): WaitFor runs on the test's goroutine, where that
	// context only ends when cleanups start — which may call WaitFor.
	if err := Poll(context.Background(), timeout, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// Poll is WaitFor for code that returns an error instead of failing a
// test (test/harness waiting for a process to be ready): nil once cond
// holds; after timeout, or when ctx ends, an error wrapping cond's last
// error.
func Poll[C Cond](ctx context.Context, timeout time.Duration, cond C) error {
	check := asErr(cond)
	deadline := time.Now().Add(timeout)
	backoff := minBackoff
	for {
		began := time.Now()
		last := check()
		if last == nil {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("not done after %v: %w", timeout, last)
		}
		timer := time.NewTimer(min(max(backoff, time.Since(began)), left))
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("%w while waiting (last: %w)", context.Cause(ctx), last)
		case <-timer.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func asErr[C Cond](cond C) func() error {
	switch c := any(cond).(type) {
	case func() error:
		return c
	case func() bool:
		return func() error {
			if c() {
				return nil
			}
			return errNotYet
		}
	}
	panic("unreachable: Cond has two types")
}
