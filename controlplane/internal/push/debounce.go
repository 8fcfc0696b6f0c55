package push

import (
	"context"
	"errors"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/snapshot"
)

// ConfigChanged implements store.Listener: it records set as the latest
// commit and wakes the debouncer. It never blocks.
func (s *Server) ConfigChanged(set *snapshot.Set) {
	s.pending.Store(set)
	select {
	case s.kick <- struct{}{}:
	default: // a kick is already pending; it will pick up this set
	}
}

// Run debounces commits and publishes them to the connections until ctx
// ends; then it ends every stream with Unavailable so edges reconnect to
// the next control plane. Call it once.
func (s *Server) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("push: Run called twice")
	}
	defer close(s.done)
	var (
		timer   *time.Timer
		timerC  <-chan time.Time
		firstAt time.Time
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
			if s.opts.debounce <= 0 {
				s.publish(s.pending.Load())
				continue
			}
			now := time.Now()
			if timerC == nil {
				firstAt = now
			}
			// Quiet period, but never later than maxDebounce after the first
			// change of the burst.
			wait := min(s.opts.debounce, firstAt.Add(s.opts.maxDebounce).Sub(now))
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			timerC = timer.C
		case <-timerC:
			timerC = nil
			s.publish(s.pending.Load())
		}
	}
}

// publish makes set current and wakes the connections of every namespace
// whose EdgeConfig changed; the others are not disturbed.
func (s *Server) publish(set *snapshot.Set) {
	old := s.current.Swap(set)
	if old.Version == set.Version {
		return
	}
	changed := snapshot.ChangedNamespaces(old, set)
	woken := 0
	s.mu.RLock()
	for _, ns := range changed {
		for c := range s.byNS[ns] {
			c.wakeUp()
			woken++
		}
	}
	s.mu.RUnlock()
	s.publishes.Add(1)
	s.log.Info("publishing configuration", "version", set.Version, "namespaces", changed, "edges", woken)
}
