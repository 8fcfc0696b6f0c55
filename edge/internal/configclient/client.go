// Package configclient is the edge's side of the config distribution stream
// (docs/control-protocol.md), modelled on an xDS state-of-the-world client:
// the edge opens one ConfigDiscoveryService stream, says hello, applies every
// full EdgeConfig snapshot atomically and ACKs it (or NACKs it naming the
// field and keeps its last good one), keeps the last good snapshot on local
// disk, reports its counters, and reconnects with jittered exponential
// backoff while serving on whatever it last applied.
//
// The package knows nothing about HTTP serving or storage: it reaches the
// rest of the edge through Applier, StatsSource and TagInvalidator.
package configclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// Applier swaps the edge's configuration. Apply must build everything first
// and swap at once: on error nothing of cfg may be in effect. The Client
// validates cfg (configspec) before calling it.
type Applier interface {
	Apply(cfg *selfhostv1.EdgeConfig) error
}

// StatsSource gives the edge's cumulative counters.
type StatsSource interface {
	Stats() *selfhostv1.EdgeStats
}

// TagInvalidator forgets one tag record of the edge's namespace.
type TagInvalidator interface {
	InvalidateTag(ctx context.Context, prefix, repository, tag string) error
}

// Status is what readiness reports about the control plane.
type Status struct {
	// Connected is true while a stream is up and the control plane has
	// answered on it.
	Connected bool
	// Version is the version of the configuration in effect; empty while
	// the edge runs on its flag defaults.
	Version string
	// LastNACK is the reason of the last rejected snapshot, cleared when a
	// later one is applied.
	LastNACK string
}

// Client runs the stream. Create it with New, call Restore before serving,
// then Run.
type Client struct {
	target    string
	namespace string
	applier   Applier
	stats     StatsSource
	inv       TagInvalidator
	o         options

	// failures queues ProxyFailure reports for the stream (see
	// ReportProxyFailure).
	failures chan *selfhostv1.ProxyFailure

	// applyMu serialises Restore and snapshot handling, so a restore can
	// never race a live snapshot.
	applyMu sync.Mutex
	mu      sync.Mutex
	status  Status
}

// New returns a Client for the control plane at target (a gRPC target such
// as "127.0.0.1:9090" or "dns:///controlplane.ns.svc:9090") serving
// namespace. stats and inv may be nil.
func New(target, namespace string, applier Applier, stats StatsSource, inv TagInvalidator, opts ...Option) (*Client, error) {
	if target == "" {
		return nil, errors.New("control: target must not be empty")
	}
	if namespace == "" {
		return nil, errors.New("control: namespace must not be empty")
	}
	if applier == nil {
		return nil, errors.New("control: applier must not be nil")
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	c := &Client{target: target, namespace: namespace, applier: applier, stats: stats, inv: inv, o: o,
		failures: make(chan *selfhostv1.ProxyFailure, failureQueue)}
	// A target that cannot parse is a configuration error: fail at start-up
	// rather than in the background. NewClient does not connect.
	conn, err := c.dial()
	if err != nil {
		return nil, err
	}
	_ = conn.Close()
	return c, nil
}

func (c *Client) dial(extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(c.o.creds),
		// The control plane publishes no gRPC service config; without this
		// the DNS resolver asks for a _grpc_config TXT record on every
		// resolution, which cluster DNS answers with SERVFAIL (seen on the
		// real node as a steady stream of CoreDNS errors).
		grpc.WithDisableServiceConfig(),
		// gRPC's own reconnect backoff grows to 120 s by default, and while
		// it waits every stream attempt fails at once. Capping it at our
		// maximum (and resetting it before each attempt, see Run) keeps the
		// reconnect schedule ours.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: max(c.o.backoffBase, 10*time.Millisecond), Multiplier: 1.6, Jitter: 0.2, MaxDelay: max(c.o.backoffMax, 10*time.Millisecond)},
			MinConnectTimeout: 10 * time.Second,
		}),
	}, c.o.dialOpts...)
	conn, err := grpc.NewClient(c.target, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("control: target %q: %w", c.target, err)
	}
	return conn, nil
}

// Status returns the current status.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

func (c *Client) setConnected(v bool) {
	c.mu.Lock()
	c.status.Connected = v
	c.mu.Unlock()
}

func (c *Client) version() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status.Version
}

// Run keeps a stream to the control plane open until ctx ends, reconnecting
// with backoff; it returns nil when ctx ends and an error only when the
// target cannot be used at all. The edge serves throughout: a broken stream
// changes nothing but Status.
func (c *Client) Run(ctx context.Context) error {
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	api := selfhostv1.NewConfigDiscoveryServiceClient(conn)
	c.o.log.Info("control plane client started", "target", c.target, "namespace", c.namespace,
		"pod", c.o.pod, "last_applied_version", c.version())

	b := backoff{base: c.o.backoffBase, max: c.o.backoffMax}
	for {
		start := time.Now()
		conn.ResetConnectBackoff()
		err := c.session(ctx, api)
		c.setConnected(false)
		if ctx.Err() != nil {
			return nil
		}
		// A stream that stayed up for a while was healthy: the next
		// failure starts the backoff afresh, so a control-plane restart is
		// noticed within one base delay.
		if time.Since(start) >= c.o.healthyAfter {
			b.reset()
		}
		delay := b.next()
		c.logStreamError(err, b.attempt, delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Option configures a Client.
type Option func(*options)

type options struct {
	tokenFile     string
	pod           string
	edgeVersion   string
	address       string
	stateDir      string
	statsInterval time.Duration
	backoffBase   time.Duration
	backoffMax    time.Duration
	healthyAfter  time.Duration
	log           *slog.Logger
	creds         credentials.TransportCredentials
	dialOpts      []grpc.DialOption
}

func defaultOptions() options {
	return options{
		statsInterval: 10 * time.Second,
		backoffBase:   200 * time.Millisecond,
		backoffMax:    30 * time.Second,
		healthyAfter:  5 * time.Second,
		log:           slog.New(slog.DiscardHandler),
		creds:         insecure.NewCredentials(),
	}
}

// WithTokenFile sends the file's content as "authorization: Bearer …" on
// every stream. The file is read again for every stream, so a rotated
// projected ServiceAccount token is picked up on the next reconnect.
func WithTokenFile(path string) Option { return func(o *options) { o.tokenFile = path } }

// WithPod sets the pod (or host) name sent in the hello.
func WithPod(name string) Option { return func(o *options) { o.pod = name } }

// WithEdgeVersion sets the build version sent in the hello.
func WithEdgeVersion(v string) Option { return func(o *options) { o.edgeVersion = v } }

// WithAddress sets the address clients pull from, sent in the hello.
func WithAddress(addr string) Option { return func(o *options) { o.address = addr } }

// WithStateDir sets where the last good configuration is kept; empty
// disables persistence.
func WithStateDir(dir string) Option { return func(o *options) { o.stateDir = dir } }

// WithStatsInterval sets how often counters are reported (default 10 s;
// zero or negative: never).
func WithStatsInterval(d time.Duration) Option { return func(o *options) { o.statsInterval = d } }

// WithBackoff sets the first and the largest reconnect delay (default
// 200 ms and 30 s). Each delay is drawn uniformly from [0, min(limit,
// base·2^attempt)] ("full jitter"), so a fleet of edges does not reconnect
// in lockstep after a control-plane restart.
func WithBackoff(base, limit time.Duration) Option {
	return func(o *options) { o.backoffBase, o.backoffMax = base, limit }
}

// WithHealthyAfter sets how long a stream must stay up before the backoff
// is reset (default 5 s).
func WithHealthyAfter(d time.Duration) Option { return func(o *options) { o.healthyAfter = d } }

// WithLogger sets the structured logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

// WithTransportCredentials sets the transport security (default insecure,
// which is right for loopback and for tests; use TLS credentials for a
// control plane reached over a network).
func WithTransportCredentials(c credentials.TransportCredentials) Option {
	return func(o *options) {
		if c != nil {
			o.creds = c
		}
	}
}

// WithDialOptions adds gRPC dial options (a bufconn dialer in tests).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOpts = append(o.dialOpts, opts...) }
}
