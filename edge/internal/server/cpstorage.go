package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/brokerstore"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// StorageControlPlane is the --storage value that reaches the shared
// storage through the control plane's storage broker: the edge holds no
// storage credentials (docs/control-protocol.md, "Storage").
const StorageControlPlane = "control-plane"

// storageKindBrokered is how /readyz and the logs name brokered storage.
const storageKindBrokered = "brokered"

// errNoStorage is what every storage operation returns until the control
// plane has sent storage.brokered.
var errNoStorage = errors.New("storage not configured yet: waiting for storage.brokered from the control plane")

// errS3Refused is the NACK of a configuration that carries storage keys.
var errS3Refused = errors.New("storage.s3: this edge no longer accepts storage credentials; the control plane must broker storage")

// cpStorage is the storage of an edge started with --storage=control-plane:
// the storage broker of the control plane, over a connection of its own
// with the edge's token. It stays closed until a configuration carrying
// storage.brokered is applied; one carrying storage.s3 is refused, since
// keys in a tenant's edge are keys in the tenant's hands.
type cpStorage struct {
	store atomic.Pointer[brokerstore.Store] // set by attach, before serving
	open  atomic.Bool                       // storage.brokered applied
	conn  *grpc.ClientConn
	log   *slog.Logger
	// grantTTL bounds how long a grant is reused (0: brokerstore's
	// default, a minute).
	grantTTL time.Duration
}

func newCPStorage(log *slog.Logger) *cpStorage { return &cpStorage{log: log} }

// attach makes conn, a connection to the control plane, the way to the
// storage. The cpStorage closes it in close.
func (c *cpStorage) attach(conn *grpc.ClientConn) {
	c.conn = conn
	opts := []brokerstore.Option{brokerstore.WithLogger(c.log.With("component", "storage"))}
	if c.grantTTL > 0 {
		opts = append(opts, brokerstore.WithGrantTTL(c.grantTTL))
	}
	c.store.Store(brokerstore.New(selfhostv1.NewStorageBrokerServiceClient(conn), presignedClient(), opts...))
}

// close closes the connection to the broker.
func (c *cpStorage) close() {
	if c.conn != nil {
		_ = c.conn.Close()
	}
}

// presignedClient reads presigned URLs. It follows no redirects: a
// presigned GET answers itself, and anything else is an error to report.
func presignedClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = 30 * time.Second
	return &http.Client{Transport: t, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// prepare checks the storage of a configuration before it is applied. The
// returned commit opens the storage (a no-op once open); call it only once
// the rest of the configuration was accepted. An error names the field and
// makes the configuration a NACK.
func (c *cpStorage) prepare(cfg *selfhostv1.StorageConfig) (commit func(), err error) {
	switch {
	case cfg.GetS3() != nil:
		return nil, errS3Refused
	case cfg.GetBrokered() == nil:
		return nil, errors.New("storage: missing: this edge runs with --storage=control-plane and needs storage.brokered from the control plane")
	}
	return func() {
		if !c.open.Swap(true) {
			c.log.Info("shared storage brokered by the control plane: reads by presigned URL, writes through the control plane")
		}
	}, nil
}

// ready reports whether the storage is open.
func (c *cpStorage) ready() bool { return c.open.Load() && c.store.Load() != nil }

var _ blob.Store = (*cpStorage)(nil)

func (c *cpStorage) current() (*brokerstore.Store, error) {
	if s := c.store.Load(); s != nil && c.open.Load() {
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
