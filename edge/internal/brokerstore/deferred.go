package brokerstore

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// ErrNotConfigured is what every operation of a Deferred returns until the
// control plane has sent storage.brokered.
var ErrNotConfigured = errors.New("storage not configured yet: waiting for storage.brokered from the control plane")

// ErrS3Refused is the NACK of a configuration that carries storage keys.
var ErrS3Refused = errors.New("storage.s3: this edge no longer accepts storage credentials; the control plane must broker storage")

// Deferred is the blob.Store of an edge started with
// --storage=control-plane: a Store over a connection of its own to the
// control plane (Attach), closed until a configuration carrying
// storage.brokered is applied (Prepare, then its commit). One carrying
// storage.s3 is refused, since keys in a tenant's edge are keys in the
// tenant's hands.
type Deferred struct {
	store atomic.Pointer[Store] // set by Attach, before serving
	open  atomic.Bool           // storage.brokered applied
	conn  *grpc.ClientConn
	log   *slog.Logger
	// grantTTL bounds how long a grant is reused (0: DefaultGrantTTL).
	grantTTL time.Duration
}

var _ blob.Store = (*Deferred)(nil)

// NewDeferred returns a closed Deferred. grantTTL bounds how long the
// broker's answer for an object is reused (0: DefaultGrantTTL).
func NewDeferred(log *slog.Logger, grantTTL time.Duration) *Deferred {
	return &Deferred{log: log, grantTTL: grantTTL}
}

// Attach makes conn, a connection to the control plane, the way to the
// storage. The Deferred closes it in Close.
func (d *Deferred) Attach(conn *grpc.ClientConn) {
	d.conn = conn
	opts := []Option{WithLogger(d.log.With("component", "storage"))}
	if d.grantTTL > 0 {
		opts = append(opts, WithGrantTTL(d.grantTTL))
	}
	d.store.Store(New(selfhostv1.NewStorageBrokerServiceClient(conn), presignedClient(), opts...))
}

// Close closes the connection to the broker.
func (d *Deferred) Close() {
	if d.conn != nil {
		_ = d.conn.Close()
	}
}

// presignedClient reads presigned URLs. It follows no redirects: a
// presigned GET answers itself, and anything else is an error to report.
func presignedClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = 30 * time.Second
	return &http.Client{Transport: t, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// Prepare checks the storage of a configuration before it is applied. The
// returned commit opens the storage (a no-op once open); call it only once
// the rest of the configuration was accepted. An error names the field and
// makes the configuration a NACK.
func (d *Deferred) Prepare(cfg *selfhostv1.StorageConfig) (commit func(), err error) {
	switch {
	case cfg.GetS3() != nil:
		return nil, ErrS3Refused
	case cfg.GetBrokered() == nil:
		return nil, errors.New("storage: missing: this edge runs with --storage=control-plane and needs storage.brokered from the control plane")
	}
	return func() {
		if !d.open.Swap(true) {
			d.log.Info("shared storage brokered by the control plane: reads by presigned URL, writes through the control plane")
		}
	}, nil
}

// Ready reports whether the storage is open.
func (d *Deferred) Ready() bool { return d.open.Load() && d.store.Load() != nil }

func (d *Deferred) current() (*Store, error) {
	if s := d.store.Load(); s != nil && d.open.Load() {
		return s, nil
	}
	return nil, ErrNotConfigured
}

// Stat implements blob.Store.
func (d *Deferred) Stat(ctx context.Context, key string) (blob.Info, error) {
	s, err := d.current()
	if err != nil {
		return blob.Info{}, err
	}
	return s.Stat(ctx, key)
}

// Open implements blob.Store.
func (d *Deferred) Open(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	s, err := d.current()
	if err != nil {
		return nil, err
	}
	return s.Open(ctx, key, offset, length)
}

// Create implements blob.Store.
func (d *Deferred) Create(ctx context.Context, key string, want blob.Expect) (blob.Writer, error) {
	s, err := d.current()
	if err != nil {
		return nil, err
	}
	return s.Create(ctx, key, want)
}

// Put implements blob.Store.
func (d *Deferred) Put(ctx context.Context, key string, data []byte, contentType string) error {
	s, err := d.current()
	if err != nil {
		return err
	}
	return s.Put(ctx, key, data, contentType)
}

// Delete implements blob.Store.
func (d *Deferred) Delete(ctx context.Context, key string) error {
	s, err := d.current()
	if err != nil {
		return err
	}
	return s.Delete(ctx, key)
}

// List implements blob.Store.
func (d *Deferred) List(ctx context.Context, prefix string, fn func(key string, info blob.Info) error) error {
	s, err := d.current()
	if err != nil {
		return err
	}
	return s.List(ctx, prefix, fn)
}
