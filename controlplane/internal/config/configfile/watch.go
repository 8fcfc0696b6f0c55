package configfile

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// ErrCannotWatch means Watch was given a StateStore that is not a
// StateWatcher.
var ErrCannotWatch = errors.New("state store cannot watch for changes")

// Reload is called by Watch after another writer changed the persisted
// state. It must call apply inside the lock that serialises Save and
// commit the State when apply returns true — store.UpdateRuntime does
// both, and does not persist again:
//
//	src.Watch(ctx, func(ctx context.Context, apply func(*config.State) bool) {
//		if _, err := st.UpdateRuntime(ctx, "runtime state from another replica", apply); err != nil { … }
//	})
//
// apply reads the newest persisted state when it runs, not when the
// change was noticed, so a reload that queued behind a newer local Save
// leaves that Save's state in place.
type Reload func(ctx context.Context, apply func(st *config.State) bool)

// Watch runs until ctx ends, calling reload after every change another
// writer (another replica) made to the state document. A document that
// does not decode or validate is logged and skipped: the State in use
// stays. A deleted document is skipped too; the next Save recreates it.
// It returns ErrCannotWatch for a StateStore that cannot watch (the
// standalone state file).
func (s *Source) Watch(ctx context.Context, reload Reload) error {
	w, ok := s.state.(StateWatcher)
	if !ok {
		return fmt.Errorf("watch %s: %w", s.state, ErrCannotWatch)
	}
	apply := func(st *config.State) bool { return s.applyLatest(w, st) }
	if err := w.Watch(ctx, func(ctx context.Context) { reload(ctx, apply) }); err != nil {
		return fmt.Errorf("watch %s: %w", s.state, err)
	}
	return nil
}

// applyLatest makes st's runtime parts those of w's newest document and
// tells whether that changed anything.
func (s *Source) applyLatest(w StateWatcher, st *config.State) bool {
	data, err := w.Latest()
	if errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("the runtime state was deleted; keeping the state in use until the next change recreates it", "state", s.state.String())
		return false
	}
	if err != nil {
		s.log.Error("runtime state not reloaded", "state", s.state.String(), "err", err)
		return false
	}
	ups, savedClash, err := decodeState(data)
	if err != nil {
		for _, p := range config.Problems(err) {
			s.log.Error("runtime state changed by another writer does not validate; keeping the state in use", "state", s.state.String(), "problem", p)
		}
		return false
	}
	next := st.Clash
	if savedClash != nil {
		// decodeState checked it.
		_ = applyClashState(&next, savedClash)
	}
	if err := checkUpstreamProxies(&config.State{Upstreams: ups, Clash: next}, s.state.String()); err != nil {
		s.log.Error("runtime state changed by another writer does not fit the config file; keeping the state in use", "state", s.state.String(), "problem", err)
		return false
	}
	if next == st.Clash && slices.EqualFunc(ups, st.Upstreams, upstreamEqual) {
		return false
	}
	st.Upstreams, st.Clash = ups, next
	s.log.Info("runtime state reloaded: changed by another writer", "state", s.state.String(), "upstreams", len(ups),
		"mode", config.ProxyModeName(next.Mode), "pinned", next.Pinned)
	return true
}

func upstreamEqual(a, b *selfhostv1.Upstream) bool { return proto.Equal(a, b) }
