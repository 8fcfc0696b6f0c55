package configstore

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/snapshot"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/configspec"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// memSource is an in-memory config.Source that can be made to fail.
type memSource struct {
	mu      sync.Mutex
	saved   *config.State
	saves   int
	failErr error
}

func (m *memSource) Load(context.Context) (*config.State, error) { return nil, errors.New("unused") }

func (m *memSource) Save(_ context.Context, st *config.State) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failErr != nil {
		return m.failErr
	}
	m.saved, m.saves = st.Clone(), m.saves+1
	return nil
}

// recorder is a Listener.
type recorder struct {
	mu   sync.Mutex
	sets []*snapshot.Set
}

func (r *recorder) ConfigChanged(set *snapshot.Set) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sets = append(r.sets, set)
}

func newStore(t *testing.T) (*Store, *memSource, *recorder) {
	t.Helper()
	st := &config.State{
		Upstreams:  configspec.DefaultUpstreams(),
		Namespaces: map[string]*config.Namespace{"team-a": {AllowedPrefixes: []string{"ghcr"}}, "team-b": {}},
	}
	src := &memSource{}
	s, err := New(st, src, snapshot.Builder{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	s.Subscribe(rec)
	return s, src, rec
}

func TestPutUpstreamCommits(t *testing.T) {
	t.Parallel()
	s, src, rec := newStore(t)
	before := s.Current().Version
	set, err := s.PutUpstream(t.Context(), &selfhostv1.Upstream{Prefix: "gcr", Url: "https://gcr.io"})
	if err != nil {
		t.Fatal(err)
	}
	if set.Version == before || s.Current() != set || src.saves != 1 || len(rec.sets) != 1 || rec.sets[0] != set {
		t.Fatalf("commit: version %s→%s, saves %d, notified %d", before, set.Version, src.saves, len(rec.sets))
	}
	// Same content again: no save, no notification.
	if again, err := s.PutUpstream(t.Context(), &selfhostv1.Upstream{Prefix: "gcr", Url: "https://gcr.io"}); err != nil || again != set {
		t.Fatalf("no-op put: %v, %v", again, err)
	}
	// Replacing keeps one entry per prefix.
	if _, err := s.PutUpstream(t.Context(), &selfhostv1.Upstream{Prefix: "gcr", Url: "https://mirror.gcr.io"}); err != nil {
		t.Fatal(err)
	}
	if src.saves != 2 || len(src.saved.Upstreams) != 5 {
		t.Fatalf("saves %d, upstreams %d", src.saves, len(src.saved.Upstreams))
	}
}

func TestFailedChangeLeavesNothing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(s *Store, src *memSource) error
		is     error
	}{
		{"invalid upstream", func(s *Store, _ *memSource) error {
			_, err := s.PutUpstream(context.Background(), &selfhostv1.Upstream{Prefix: "x", Url: "ftp://x"})
			return err
		}, configspec.ErrInvalid},
		{"alias conflict", func(s *Store, _ *memSource) error {
			_, err := s.PutUpstream(context.Background(), &selfhostv1.Upstream{Prefix: "x", Aliases: []string{"quayio"}, Url: "https://x.io"})
			return err
		}, configspec.ErrInvalid},
		{"delete unknown", func(s *Store, _ *memSource) error {
			_, err := s.DeleteUpstream(context.Background(), "nope")
			return err
		}, ErrNotFound},
		{"delete in use", func(s *Store, _ *memSource) error {
			_, err := s.DeleteUpstream(context.Background(), "ghcr")
			return err
		}, ErrInUse},
		{"save fails", func(s *Store, src *memSource) error {
			src.failErr = errors.New("disk full")
			_, err := s.PutUpstream(context.Background(), &selfhostv1.Upstream{Prefix: "gcr", Url: "https://gcr.io"})
			return err
		}, nil},
		{"mutation fails", func(s *Store, _ *memSource) error {
			_, err := s.Update(context.Background(), "test", func(st *config.State) error {
				st.Upstreams = nil // changed, then refused: the copy is dropped
				return errors.New("refused")
			})
			return err
		}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, src, rec := newStore(t)
			before := s.Current()
			err := tc.change(s, src)
			if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("err = %v, want %v", err, tc.is)
			}
			if s.Current() != before || src.saves != 0 || len(rec.sets) != 0 {
				t.Fatalf("half-applied: current changed %v, saves %d, notified %d", s.Current() != before, src.saves, len(rec.sets))
			}
			if len(s.state.Upstreams) != 4 {
				t.Fatalf("state changed: %d upstreams", len(s.state.Upstreams))
			}
		})
	}
}

func TestDeleteUpstream(t *testing.T) {
	t.Parallel()
	s, src, _ := newStore(t)
	if _, err := s.DeleteUpstream(t.Context(), "k8s"); err != nil {
		t.Fatal(err)
	}
	var prefixes []string
	for _, u := range src.saved.Upstreams {
		prefixes = append(prefixes, u.GetPrefix())
	}
	if strings.Join(prefixes, ",") != "dockerhub,ghcr,quay" {
		t.Fatalf("saved %v", prefixes)
	}
}

func TestNewRefusesInvalidInitialState(t *testing.T) {
	t.Parallel()
	st := &config.State{Upstreams: []*selfhostv1.Upstream{{Prefix: "library", Url: "https://x.io"}}}
	if _, err := New(st, &memSource{}, snapshot.Builder{}, slog.New(slog.NewTextHandler(io.Discard, nil))); !errors.Is(err, configspec.ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
}
