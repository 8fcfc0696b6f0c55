package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	s3store "github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/s3"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// StorageControlPlane is the --storage value that takes the storage from
// the control plane's configuration (storage.s3) instead of the flags.
const StorageControlPlane = "control-plane"

// errStorageChanged ends Run when the control plane sends storage other
// than the one the edge opened: the pod restarts and opens the new one.
var errStorageChanged = errors.New("the control plane changed the shared storage; exiting so the edge restarts with it")

// errNoStorage is what every storage operation returns until the control
// plane has sent storage.s3.
var errNoStorage = errors.New("storage not configured yet: waiting for storage.s3 from the control plane")

// cpStorage is the storage of an edge started with --storage=control-plane:
// a blob.Store that stays empty until the first configuration carrying
// storage.s3 opens the S3 store, once. Its credentials live only here, in
// memory.
type cpStorage struct {
	store   atomic.Pointer[s3store.Store]
	log     *slog.Logger
	mu      sync.Mutex
	opened  *selfhostv1.S3Storage // what store was opened with
	changed chan struct{}         // closed when a different storage arrives
	once    sync.Once
	// open builds the store; a test may replace it.
	open func(ctx context.Context, s *selfhostv1.S3Storage) (*s3store.Store, error)
}

func newCPStorage(log *slog.Logger) *cpStorage {
	return &cpStorage{log: log, changed: make(chan struct{}), open: openS3}
}

// openS3 builds the S3 store exactly as --storage=s3:// does, with the
// message's static credentials when it carries them (else the edge's own
// AWS chain).
func openS3(ctx context.Context, s *selfhostv1.S3Storage) (*s3store.Store, error) {
	client, err := s3store.NewClient(ctx, s3store.Options{Endpoint: s.GetEndpoint(), Region: s.GetRegion(), PathStyle: s.GetPathStyle(),
		AccessKeyID: s.GetAccessKeyId(), SecretAccessKey: s.GetSecretAccessKey()})
	if err != nil {
		return nil, err
	}
	return s3store.New(client, s.GetBucket(), s.GetPrefix())
}

// prepare checks the storage of a configuration before it is applied. The
// returned commit installs it (a no-op when unchanged); call it only once
// the rest of the configuration was accepted. An error names the field and
// makes the configuration a NACK.
func (c *cpStorage) prepare(cfg *selfhostv1.StorageConfig) (commit func(), err error) {
	s := cfg.GetS3()
	if s == nil {
		return nil, errors.New("storage: missing: this edge runs with --storage=control-plane and needs storage.s3 from the control plane")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.opened != nil {
		if proto.Equal(c.opened, s) {
			return func() {}, nil
		}
		c.log.Error("shared storage changed; exiting so the edge restarts with the new storage",
			"old", describeS3(c.opened), "new", describeS3(s))
		c.once.Do(func() { close(c.changed) })
		return nil, errors.New("storage: changed; the edge restarts to open the new storage")
	}
	st, err := c.open(context.Background(), s)
	if err != nil {
		return nil, fmt.Errorf("storage.s3: %w", err)
	}
	kept := proto.CloneOf(s)
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.opened == nil {
			c.opened = kept
			c.store.Store(st)
			c.log.Info("shared storage from the control plane opened", "storage", describeS3(kept))
		}
	}, nil
}

// ready reports whether the store is open.
func (c *cpStorage) ready() bool { return c.store.Load() != nil }

// describeS3 is s without its credentials, for logs.
func describeS3(s *selfhostv1.S3Storage) string {
	creds := "edge's own AWS chain"
	if s.GetAccessKeyId() != "" {
		creds = "from the control plane"
	}
	return fmt.Sprintf("s3://%s/%s endpoint=%q region=%q pathStyle=%v credentials=%s",
		s.GetBucket(), s.GetPrefix(), s.GetEndpoint(), s.GetRegion(), s.GetPathStyle(), creds)
}

var (
	_ blob.Store      = (*cpStorage)(nil)
	_ blob.FilePutter = (*cpStorage)(nil)
)

func (c *cpStorage) current() (*s3store.Store, error) {
	if s := c.store.Load(); s != nil {
		return s, nil
	}
	return nil, errNoStorage
}

// Stat implements blob.Store.
func (c *cpStorage) Stat(ctx context.Context, key string) (blob.Info, error) {
	s, err := c.current()
	if err != nil {
		return blob.Info{}, err
	}
	return s.Stat(ctx, key)
}

// Open implements blob.Store.
func (c *cpStorage) Open(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	s, err := c.current()
	if err != nil {
		return nil, err
	}
	return s.Open(ctx, key, offset, length)
}

// Create implements blob.Store.
func (c *cpStorage) Create(ctx context.Context, key string, want blob.Expect) (blob.Writer, error) {
	s, err := c.current()
	if err != nil {
		return nil, err
	}
	return s.Create(ctx, key, want)
}

// Put implements blob.Store.
func (c *cpStorage) Put(ctx context.Context, key string, data []byte, contentType string) error {
	s, err := c.current()
	if err != nil {
		return err
	}
	return s.Put(ctx, key, data, contentType)
}

// Delete implements blob.Store.
func (c *cpStorage) Delete(ctx context.Context, key string) error {
	s, err := c.current()
	if err != nil {
		return err
	}
	return s.Delete(ctx, key)
}

// List implements blob.Store.
func (c *cpStorage) List(ctx context.Context, prefix string, fn func(key string, info blob.Info) error) error {
	s, err := c.current()
	if err != nil {
		return err
	}
	return s.List(ctx, prefix, fn)
}

// PutFile implements blob.FilePutter, as the S3 store does.
func (c *cpStorage) PutFile(ctx context.Context, key string, src io.ReaderAt, want blob.Expect) error {
	s, err := c.current()
	if err != nil {
		return err
	}
	return s.PutFile(ctx, key, src, want)
}
