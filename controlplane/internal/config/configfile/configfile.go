// Package configfile is the config.Source of both modes: a YAML file
// written by the operator, plus a JSON state document that holds what the
// admin API changed at runtime (the upstream list, credentials included,
// and the Clash mode and node). Load reads the YAML file, then lets the
// state document's parts replace the file's; Save rewrites the document.
//
// Standalone, the document is a file in the state directory (FileState,
// written atomically). In-cluster (InCluster, WithStateStore) the YAML
// file is mounted from the Helm chart's ConfigMap and holds neither edge
// tokens nor namespaces, and the document lives in a StateStore the
// replicas share (a ConfigMap); Watch then reloads what other replicas
// saved.
package configfile

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
)

// StateFileName is the state file's name inside the state directory.
const StateFileName = "controlplane-state.json"

// Source reads the YAML config file and the state document.
type Source struct {
	configPath string
	state      StateStore
	inCluster  bool
	log        *slog.Logger
}

var _ config.Source = (*Source)(nil)

// Option configures a Source.
type Option func(*Source)

// WithStateStore keeps the state document in st instead of the state
// file; New's stateDir is then unused.
func WithStateStore(st StateStore) Option { return func(s *Source) { s.state = st } }

// InCluster selects the in-cluster rules for the YAML file: admin tokens
// are optional (admins authenticate with Kubernetes tokens), and a
// namespaces: section is refused (namespaces opt in by label and edges
// authenticate with their ServiceAccount tokens).
func InCluster() Option { return func(s *Source) { s.inCluster = true } }

// New returns a Source for the YAML file at configPath. stateDir holds the
// state file; empty means the config file's directory.
func New(configPath, stateDir string, log *slog.Logger, opts ...Option) *Source {
	if stateDir == "" {
		stateDir = filepath.Dir(configPath)
	}
	s := &Source{configPath: configPath, log: log}
	for _, o := range opts {
		o(s)
	}
	if s.state == nil {
		s.state = NewFileState(filepath.Join(stateDir, StateFileName))
	}
	return s
}

// StatePath is the state file where runtime changes are persisted, or ""
// when they go to another StateStore.
func (s *Source) StatePath() string {
	if f, ok := s.state.(*FileState); ok {
		return f.Path()
	}
	return ""
}

// Load implements config.Source.
func (s *Source) Load(ctx context.Context) (*config.State, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	data, err := os.ReadFile(s.configPath)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	st, err := parse(data, filepath.Dir(s.configPath), s.inCluster)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", s.configPath, err)
	}
	upstreamsFrom := s.configPath
	data, err = s.state.Read(ctx)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		s.log.Info("no runtime state yet; upstreams from the config file", "config", s.configPath, "state", s.state.String(), "upstreams", len(st.Upstreams))
	case err != nil:
		// A state document that cannot be read is not skipped: starting from
		// the config file alone would silently undo the operator's changes.
		return nil, fmt.Errorf("state %s: %w", s.state, err)
	default:
		saved, savedClash, err := decodeState(data)
		if err != nil {
			return nil, fmt.Errorf("state %s: %w", s.state, err)
		}
		st.Upstreams = saved
		upstreamsFrom = s.state.String()
		s.log.Info("upstreams from the runtime state replace the config file's", "state", s.state.String(), "upstreams", len(st.Upstreams))
		if savedClash != nil {
			if err := applyClashState(&st.Clash, savedClash); err != nil {
				return nil, fmt.Errorf("state %s: %w", s.state, err)
			}
			s.log.Info("clash mode from the runtime state replaces the config file's", "state", s.state.String(), "mode", savedClash.Mode, "pinned", savedClash.Pinned)
		}
	}
	if err := checkAllowedPrefixes(st, upstreamsFrom); err != nil {
		return nil, fmt.Errorf("config %s: %w", s.configPath, err)
	}
	if err := checkUpstreamProxies(st, upstreamsFrom); err != nil {
		return nil, fmt.Errorf("config %s: %w", s.configPath, err)
	}
	return st, nil
}

// Save implements config.Source. Only the upstreams and the Clash mode and
// node are runtime state; the tokens, namespaces and the rest of the
// clash: section stay in the operator's YAML file.
func (s *Source) Save(ctx context.Context, st *config.State) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	data, err := encodeState(st)
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := s.state.Write(ctx, data); err != nil {
		return fmt.Errorf("save state %s: %w", s.state, err)
	}
	return nil
}
