package configfile

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// StateStore keeps the state document: the JSON that Save writes and Load
// reads back. The default is a file (FileState); in-cluster it is a
// ConfigMap (package configmapstate).
type StateStore interface {
	// Read returns the document, or an error matching fs.ErrNotExist when
	// none was written yet.
	Read(ctx context.Context) ([]byte, error)
	// Write replaces the document; a reader sees the old or the new one,
	// never a mix.
	Write(ctx context.Context, data []byte) error
	// String names the place in errors and logs ("/var/lib/x/state.json",
	// "ConfigMap ns/name, key state.json").
	String() string
}

// StateWatcher is a StateStore that other writers (the other replicas)
// share, and that notices their changes.
type StateWatcher interface {
	StateStore
	// Watch runs until ctx ends and calls changed, never concurrently,
	// each time the document was changed by another writer; not for its
	// own writes.
	Watch(ctx context.Context, changed func(ctx context.Context)) error
	// Latest returns the newest document the store knows, without asking
	// anyone: the last one it read, wrote or saw changed. It matches
	// fs.ErrNotExist when there is none.
	Latest() ([]byte, error)
}

// FileState is the state file, written atomically (temporary file,
// fsync, rename, fsync of the directory) with mode 0600.
type FileState struct{ path string }

var _ StateStore = (*FileState)(nil)

// NewFileState returns the StateStore of the file at path. Its directory
// is created on the first Write.
func NewFileState(path string) *FileState { return &FileState{path: path} }

// Path is the file's path.
func (f *FileState) Path() string { return f.path }

// String implements StateStore.
func (f *FileState) String() string { return f.path }

// Read implements StateStore.
func (f *FileState) Read(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return os.ReadFile(f.path)
}

// Write implements StateStore.
func (f *FileState) Write(ctx context.Context, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return writeFileAtomic(f.path, data)
}

// stateFormat versions the state document, so a later format is refused
// rather than misread.
const stateFormat = 1

// stateFile is the JSON layout of the state document.
type stateFile struct {
	Format    int            `json:"format"`
	Upstreams []upstreamSpec `json:"upstreams"`
	// Clash holds the mode and node chosen through the admin API; absent
	// until one was.
	Clash *clashState `json:"clash,omitempty"`
}

// encodeState is the state document of st's runtime parts: the upstreams,
// and the Clash mode and node once the admin API chose them.
func encodeState(st *config.State) ([]byte, error) {
	sf := stateFile{Format: stateFormat, Upstreams: specsFromUpstreams(st.Upstreams)}
	if st.Clash.ModeFromRuntime {
		sf.Clash = &clashState{Mode: config.ProxyModeName(st.Clash.Mode), Pinned: st.Clash.Pinned}
	}
	data, err := json.MarshalIndent(sf, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// decodeState parses and validates a state document.
func decodeState(data []byte) ([]*selfhostv1.Upstream, *clashState, error) {
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
	if err != nil {
		return nil, nil, err
	}
	if sf.Clash != nil {
		var scratch config.Clash
		if err := applyClashState(&scratch, sf.Clash); err != nil {
			return nil, nil, err
		}
	}
	return ups, sf.Clash, nil
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
		_ = f.Close() // the error above is the one to report
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close() // the error above is the one to report
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close() // the error above is the one to report
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
		return fmt.Errorf("sync directory: %w", err)
	}
	defer func() { _ = d.Close() }() // read-only handle; Sync's error is the one that matters
	return d.Sync()
}
