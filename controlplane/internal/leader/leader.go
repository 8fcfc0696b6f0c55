// Package leader elects one control-plane replica to do the writing: the
// namespace controller runs only on the leader, while every replica keeps
// its informers warm and serves. It wraps client-go's leaderelection on a
// coordination.k8s.io Lease in the release namespace and adds what that
// package leaves to its callers: it campaigns again after losing the lease
// (never os.Exit), it waits for the leader's work to stop before the next
// campaign, and it releases the lease only after that work returned.
package leader

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Default timings, as Kubernetes' own controllers use them.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// Elector campaigns for a Lease and runs a function while it holds it.
type Elector struct {
	lock     *resourcelock.LeaseLock
	log      *slog.Logger
	lease    time.Duration
	renew    time.Duration
	retry    time.Duration
	podName  string
	leading  atomic.Bool
	identity string
}

// Option configures an Elector.
type Option func(*Elector)

// WithPodName sets the pod name the identity starts with (default: the
// host name, which is the pod name in Kubernetes).
func WithPodName(name string) Option { return func(e *Elector) { e.podName = name } }

// WithTimings sets the lease duration, renew deadline and retry period
// (defaults 15 s, 10 s, 2 s). A non-leader takes over at the earliest one
// lease duration after the leader's last renewal; a leader that cannot
// renew for the renew deadline stops leading.
func WithTimings(lease, renew, retry time.Duration) Option {
	return func(e *Elector) { e.lease, e.renew, e.retry = lease, renew, retry }
}

// New returns an elector for the Lease namespace/name. Its identity is the
// pod name plus a random suffix, so a restarted pod never mistakes its
// predecessor's lease for its own.
func New(client kubernetes.Interface, namespace, name string, log *slog.Logger, opts ...Option) (*Elector, error) {
	e := &Elector{lease: DefaultLeaseDuration, renew: DefaultRenewDeadline, retry: DefaultRetryPeriod}
	for _, o := range opts {
		o(e)
	}
	switch {
	case namespace == "":
		return nil, errors.New("leader election: empty lease namespace")
	case name == "":
		return nil, errors.New("leader election: empty lease name")
	case e.retry <= 0:
		return nil, fmt.Errorf("leader election: retry period %s must be positive", e.retry)
	case float64(e.renew) <= leaderelection.JitterFactor*float64(e.retry):
		return nil, fmt.Errorf("leader election: renew deadline %s must exceed %.1f × retry period %s", e.renew, leaderelection.JitterFactor, e.retry)
	case e.lease <= e.renew:
		return nil, fmt.Errorf("leader election: lease duration %s must exceed renew deadline %s", e.lease, e.renew)
	case e.lease < time.Second:
		return nil, fmt.Errorf("leader election: lease duration %s must be at least 1s (the Lease counts whole seconds)", e.lease)
	}
	if e.podName == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("leader election: pod name: %w", err)
		}
		e.podName = h
	}
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		return nil, fmt.Errorf("leader election: identity: %w", err)
	}
	e.identity = strings.TrimSpace(e.podName) + "_" + hex.EncodeToString(suffix)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e.log = log.With("component", "leader-election", "lease", namespace+"/"+name, "identity", e.identity)
	e.lock = &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: namespace, Name: name},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: e.identity},
	}
	return e, nil
}

// Identity is this elector's holder identity in the Lease.
func (e *Elector) Identity() string { return e.identity }

// IsLeader reports whether this replica holds the lease and its function
// runs (for metrics and logs; decisions belong to the function's context).
func (e *Elector) IsLeader() bool { return e.leading.Load() }

// Run campaigns until ctx ends. Each time it wins, it calls lead with a
// context that ends when the lease is lost (or ctx ends); it waits for
// lead to return before it campaigns again. lead must stop writing when
// its context ends. When ctx ends while leading, the lease is released
// after lead returned, so a standby takes over without waiting for it to
// expire. Run returns nil when ctx ends; an error only for a bad
// configuration.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context)) error {
	for ctx.Err() == nil {
		early, err := e.campaign(ctx, lead)
		if err != nil {
			return err
		}
		if early {
			// lead returned while still leading: give others a chance
			// before campaigning again.
			select {
			case <-ctx.Done():
			case <-time.After(e.retry):
			}
		}
	}
	return nil
}

// campaign runs one election: acquire, lead, lose (or ctx ends). early is
// true when lead returned on its own while the lease was still held.
func (e *Elector) campaign(ctx context.Context, lead func(ctx context.Context)) (early bool, err error) {
	electCtx, stopElect := context.WithCancel(ctx)
	defer stopElect()
	var (
		mu       sync.Mutex
		finished bool // le.Run returned: a late OnStartedLeading must not lead
		started  bool
		leadDone = make(chan struct{})
		returned atomic.Bool
	)
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:          e.lock,
		LeaseDuration: e.lease,
		RenewDeadline: e.renew,
		RetryPeriod:   e.retry,
		Name:          e.lock.LeaseMeta.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(leadCtx context.Context) {
				mu.Lock()
				if finished {
					mu.Unlock()
					return
				}
				started = true
				mu.Unlock()
				defer close(leadDone)
				e.leading.Store(true)
				e.log.Info("leading")
				lead(leadCtx)
				e.leading.Store(false)
				if electCtx.Err() == nil && leadCtx.Err() == nil {
					returned.Store(true)
					e.log.Warn("leader's work returned while leading; stepping down")
					stopElect()
				}
			},
			OnStoppedLeading: func() { e.leading.Store(false) },
			OnNewLeader: func(id string) {
				if id != e.identity {
					e.log.Info("another replica leads", "leader", id)
				}
			},
		},
	})
	if err != nil {
		return false, fmt.Errorf("leader election: %w", err)
	}
	le.Run(electCtx)
	mu.Lock()
	finished = true
	wasStarted := started
	mu.Unlock()
	if !wasStarted {
		return false, nil
	}
	<-leadDone
	e.leading.Store(false)
	if ctx.Err() != nil || returned.Load() {
		e.release()
	}
	if ctx.Err() == nil && !returned.Load() {
		e.log.Warn("lost the lease; campaigning again")
	}
	return returned.Load(), nil
}

// release gives the lease up if this elector still holds it, the way
// client-go's ReleaseOnCancel does, but only after the leader's work
// returned.
func (e *Elector) release() {
	ctx, cancel := context.WithTimeout(context.Background(), e.renew)
	defer cancel()
	rec, _, err := e.lock.Get(ctx)
	if err != nil {
		// Typically RBAC already gone (an uninstall that deleted the Role
		// first) or the apiserver unreachable: say so, or a successor's
		// wait of a whole lease duration looks unexplained.
		e.log.Warn("lease not released: reading it failed; a standby takes over when it expires", "err", err)
		return
	}
	if rec.HolderIdentity != e.identity {
		e.log.Info("lease not released: another replica holds it", "holder", rec.HolderIdentity)
		return
	}
	now := metav1.Now()
	err = e.lock.Update(ctx, resourcelock.LeaderElectionRecord{
		LeaderTransitions:    rec.LeaderTransitions,
		LeaseDurationSeconds: 1,
		RenewTime:            now,
		AcquireTime:          now,
	})
	if err != nil {
		e.log.Warn("lease not released; a standby takes over when it expires", "err", err)
		return
	}
	e.log.Info("released the lease")
}
