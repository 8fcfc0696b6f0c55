// Package configstore holds the committed configuration: the current
// config.State and the snapshot.Set built from it. A change is applied to a
// copy, built and validated in full, persisted through the config.Source,
// and only then made current and announced to listeners; a change that
// fails any step leaves nothing behind (nothing half-applied).
package configstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/snapshot"
)

// Sentinel errors of the store's operations. Validation errors wrap
// configspec.ErrInvalid instead.
var (
	// ErrNotFound: the named object does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInUse: the object is referenced and cannot be removed.
	ErrInUse = errors.New("in use")
)

// Builder builds and validates the snapshots of a State.
type Builder interface {
	Build(st *config.State) (*snapshot.Set, error)
}

// Listener is told about every committed Set, in commit order. It is
// called with the store's lock held and must not block.
type Listener interface {
	ConfigChanged(set *snapshot.Set)
}

// Store is the committed configuration. It is safe for concurrent use;
// changes are serialised.
type Store struct {
	source  config.Source
	builder Builder
	log     *slog.Logger

	mu        sync.Mutex // serialises changes
	state     *config.State
	listeners []Listener

	current atomic.Pointer[snapshot.Set]
}

// New builds the Set of initial (normally source.Load's result) and
// returns a Store serving it. An initial State that does not validate is
// an error: the control plane refuses to start on it.
func New(initial *config.State, source config.Source, builder Builder, log *slog.Logger) (*Store, error) {
	set, err := builder.Build(initial)
	if err != nil {
		return nil, fmt.Errorf("initial configuration: %w", err)
	}
	s := &Store{source: source, builder: builder, log: log, state: initial.Clone()}
	s.current.Store(set)
	return s, nil
}

// Current returns the committed Set. It never blocks on a change in
// progress.
func (s *Store) Current() *snapshot.Set { return s.current.Load() }

// Subscribe adds a Listener for later commits.
func (s *Store) Subscribe(l Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listeners = append(s.listeners, l)
}

// Update applies mutate to a copy of the State and commits the result
// when it builds, validates and persists. A change that alters nothing is
// not persisted and not announced. op names the operation in errors and
// logs.
func (s *Store) Update(ctx context.Context, op string, mutate func(st *config.State) error) (*snapshot.Set, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.state.Clone()
	if err := mutate(next); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return s.commit(ctx, op, next, true)
}

// UpdateRuntime applies a change to runtime-only state (State.Proxy: the
// Clash node pool and selection), which is never persisted. mutate
// returns false when it changed nothing, and nothing is built. A change
// that leaves every snapshot as it was is adopted (the next change starts
// from it) but not announced, so edges only hear of changes they see.
func (s *Store) UpdateRuntime(ctx context.Context, op string, mutate func(st *config.State) bool) (*snapshot.Set, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.state.Clone()
	if !mutate(next) {
		return s.current.Load(), nil
	}
	return s.commit(ctx, op, next, false)
}

// commit builds next and makes it current; with persist it is saved
// first. Called with s.mu held.
func (s *Store) commit(ctx context.Context, op string, next *config.State, persist bool) (*snapshot.Set, error) {
	set, err := s.builder.Build(next)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	prev := s.current.Load()
	if set.Version == prev.Version {
		if !persist {
			s.state = next
		}
		return prev, nil
	}
	if persist {
		if err := s.source.Save(ctx, next); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	s.state = next
	s.current.Store(set)
	for _, l := range s.listeners {
		l.ConfigChanged(set)
	}
	s.log.Info("configuration committed", "op", op, "from", prev.Version, "to", set.Version,
		"namespaces_changed", len(snapshot.ChangedNamespaces(prev, set)))
	return set, nil
}
