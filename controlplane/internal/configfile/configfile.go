// Package configfile is the standalone config.Source: a YAML file written
// by the operator, plus a JSON state file in the state directory that
// holds what the admin API changed at runtime (the upstream list,
// credentials included). Load reads the YAML file, then lets the state
// file's upstreams replace the file's; Save rewrites the state file
// atomically (temporary file, fsync, rename, fsync of the directory).
package configfile

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// StateFileName is the state file's name inside the state directory.
const StateFileName = "controlplane-state.json"

// stateFormat versions the state file, so a later format is refused
// rather than misread.
const stateFormat = 1

// Source reads the YAML config file and the state file.
type Source struct {
	configPath string
	statePath  string
	log        *slog.Logger
}

var _ config.Source = (*Source)(nil)

// New returns a Source for the YAML file at configPath. stateDir holds the
// state file; empty means the config file's directory.
func New(configPath, stateDir string, log *slog.Logger) *Source {
	if stateDir == "" {
		stateDir = filepath.Dir(configPath)
	}
	return &Source{configPath: configPath, statePath: filepath.Join(stateDir, StateFileName), log: log}
}

// StatePath is where runtime changes are persisted.
func (s *Source) StatePath() string { return s.statePath }

// stateFile is the JSON layout of the state file.
type stateFile struct {
	Format    int            `json:"format"`
	Upstreams []upstreamSpec `json:"upstreams"`
	// Clash holds the mode and node chosen through the admin API; absent
	// until one was.
	Clash *clashState `json:"clash,omitempty"`
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
	st, err := parse(data, filepath.Dir(s.configPath))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", s.configPath, err)
	}
	upstreamsFrom := s.configPath
	saved, savedClash, err := s.readState()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		s.log.Info("no runtime state yet; upstreams from the config file", "config", s.configPath, "state", s.statePath, "upstreams", len(st.Upstreams))
	case err != nil:
		// A state file that cannot be read is not skipped: starting from the
		// config file alone would silently undo the operator's changes.
		return nil, fmt.Errorf("state %s: %w", s.statePath, err)
	default:
		st.Upstreams = saved
		upstreamsFrom = s.statePath
		s.log.Info("upstreams from the runtime state file replace the config file's", "state", s.statePath, "upstreams", len(st.Upstreams))
		if savedClash != nil {
			if err := applyClashState(&st.Clash, savedClash); err != nil {
				return nil, fmt.Errorf("state %s: %w", s.statePath, err)
			}
			s.log.Info("clash mode from the runtime state file replaces the config file's", "state", s.statePath, "mode", savedClash.Mode, "pinned", savedClash.Pinned)
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

func (s *Source) readState() ([]*selfhostv1.Upstream, *clashState, error) {
	data, err := os.ReadFile(s.statePath)
	if err != nil {
		return nil, nil, err
	}
	var sf stateFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sf); err != nil {
		return nil, nil, config.Invalidf("%s", decodeError(err))
	}
	if sf.Format != stateFormat {
		return nil, nil, config.Invalidf("format: %d is not supported (want %d)", sf.Format, stateFormat)
	}
	ups, err := upstreamsFromSpecs("upstreams", sf.Upstreams)
	return ups, sf.Clash, err
}

// Save implements config.Source. Only the upstreams and the Clash mode and
// node are runtime state; the tokens, namespaces and the rest of the
// clash: section stay in the operator's YAML file.
func (s *Source) Save(ctx context.Context, st *config.State) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	sf := stateFile{Format: stateFormat, Upstreams: specsFromUpstreams(st.Upstreams)}
	if st.Clash.ModeFromRuntime {
		sf.Clash = &clashState{Mode: config.ProxyModeName(st.Clash.Mode), Pinned: st.Clash.Pinned}
	}
	data, err := json.MarshalIndent(sf, "", "  ")
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := writeFileAtomic(s.statePath, append(data, '\n')); err != nil {
		return fmt.Errorf("save state %s: %w", s.statePath, err)
	}
	return nil
}

// writeFileAtomic writes data to path with mode 0600 so that readers see
// the old or the new content, never a torn write, even across a crash.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	// CreateTemp already uses 0600; Chmod states it, whatever the umask.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
