package configclient

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// stateFile is the last good configuration inside the state directory. It
// holds upstream credentials and the pull token: owner-only, like a Secret
// mounted into the pod. The shared S3 storage's credentials are never
// written to it (withoutStorageCredentials).
const stateFile = "edge-config.json"

// Restore applies the configuration persisted by an earlier run, so the
// edge serves its last good configuration before (or without) the control
// plane answering. It returns the restored version, or "" when there is
// nothing to restore. A file that no longer validates is reported and left
// alone: the edge then starts on its flag defaults.
func (c *Client) Restore() (string, error) {
	if c.o.stateDir == "" {
		return "", nil
	}
	cfg, err := loadState(c.o.stateDir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	if err := c.apply(cfg); err != nil {
		return "", fmt.Errorf("restore persisted configuration %s: %w", cfg.GetVersion(), err)
	}
	c.mu.Lock()
	c.status.Version = cfg.GetVersion()
	c.mu.Unlock()
	c.o.log.Info("persisted configuration applied", "version", cfg.GetVersion(), "upstreams", len(cfg.GetUpstreams()))
	return cfg.GetVersion(), nil
}

func (c *Client) persist(cfg *selfhostv1.EdgeConfig) error {
	if c.o.stateDir == "" {
		return nil
	}
	return saveState(c.o.stateDir, withoutStorageCredentials(cfg))
}

// withoutStorageCredentials returns cfg, or a copy of it without the shared
// S3 storage's access key and secret: those are kept in memory only, so a
// restarted edge needs the control plane to open its storage again.
func withoutStorageCredentials(cfg *selfhostv1.EdgeConfig) *selfhostv1.EdgeConfig {
	s3 := cfg.GetStorage().GetS3()
	if s3.GetAccessKeyId() == "" && s3.GetSecretAccessKey() == "" {
		return cfg
	}
	out := proto.CloneOf(cfg)
	out.Storage.S3.AccessKeyId, out.Storage.S3.SecretAccessKey = "", ""
	return out
}

func loadState(dir string) (*selfhostv1.EdgeConfig, error) {
	path := filepath.Join(dir, stateFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read persisted configuration: %w", err)
	}
	cfg := &selfhostv1.EdgeConfig{}
	// DiscardUnknown: a file written by a newer edge (after a rollback)
	// still restores what this one understands.
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, cfg); err != nil {
		return nil, fmt.Errorf("decode persisted configuration %s: %w", path, err)
	}
	return cfg, nil
}

// saveState replaces the state file atomically: a temporary file in the
// same directory is written, synced and renamed over the old one, then the
// directory is synced, so a crash leaves either the old or the new file,
// never a torn one.
func saveState(dir string, cfg *selfhostv1.EdgeConfig) (err error) {
	data, err := protojson.MarshalOptions{Multiline: true}.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("encode configuration: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	tmp, err := os.CreateTemp(dir, stateFile+".tmp-*")
	if err != nil {
		return fmt.Errorf("create state file: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	// CreateTemp already uses 0600; Chmod keeps it so under any umask
	// handling a future Go might change.
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("chmod state file: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync state file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close state file: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, stateFile)); err != nil {
		return fmt.Errorf("replace state file: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
