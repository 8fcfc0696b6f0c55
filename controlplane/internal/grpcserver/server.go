// Package grpcserver assembles the control plane from its parts — config
// source, authenticator, store, push server, admin service — into one gRPC
// server with server reflection and the health service. cmd/controlplane
// calls it after parsing flags; tests and benchmarks use it to run a whole
// control plane in-process:
//
//	srv, err := grpcserver.New(ctx, grpcserver.Options{Source: configfile.New(path, "", log), Logger: log})
//	lis, _ := net.Listen("tcp", "127.0.0.1:0") // or a bufconn.Listener
//	go srv.Serve(ctx, lis)                    // until ctx ends
package grpcserver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/admin"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/auth"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/calllimit"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/clash"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/configstore"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/connlimit"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/metrics"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/push"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/snapshot"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// Defaults of the Options.
const (
	DefaultMaxRecvMsgSize = 1 << 20
	DefaultShutdownGrace  = 5 * time.Second
	// DefaultMaxConnections bounds the open gRPC connections: one per edge
	// replica and admin client, with room for a thousand namespaces'
	// edges reconnecting at once.
	DefaultMaxConnections = 1024
	// DefaultMaxConcurrentStreams bounds the streams of one connection. An
	// edge uses one config stream and a few unary calls at a time; the
	// gRPC default (unlimited) let 20 anonymous connections open 40 000
	// health streams and push the server past its memory limit.
	DefaultMaxConcurrentStreams = 64
	// DefaultMaxStreamsPerCaller bounds the streams one caller (an edge
	// namespace, an admin, or all anonymous callers together) holds open
	// across its connections: the two limits above alone would still let
	// 1024 connections hold 65 536 streams, ~12 KiB each.
	DefaultMaxStreamsPerCaller = 256
)

// Per-connection bounds that need no option: metadata beyond 64 KiB
// (bearer tokens are a few KiB) is refused before it is buffered, and a
// connection must finish its TLS and HTTP/2 handshake within 10 s, so
// idle sockets cannot hold --max-grpc-connections slots for the default
// two minutes.
const (
	maxHeaderListSize = 64 << 10
	handshakeTimeout  = 10 * time.Second
)

// Keepalive: the server pings idle connections every 30 s so dead edges are
// noticed, and lets edges ping as often as every 10 s (more often is a
// protocol violation and closes the connection).
var (
	keepaliveParams = keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}
	keepalivePolicy = keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}
)

// Options configure a Server. Source is required; zero values elsewhere
// mean the defaults, except Debounce, where zero pushes each change at once.
type Options struct {
	// Source loads the configuration and persists runtime changes.
	Source config.Source
	// Authenticator checks bearer tokens; nil means the static tokens of
	// the loaded configuration (standalone mode).
	Authenticator auth.Authenticator
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// Debounce is the quiet period before a change is pushed.
	Debounce time.Duration
	// MaxDebounce bounds how long a steady stream of changes delays a
	// push (default push.DefaultMaxDebounce).
	MaxDebounce time.Duration
	// HelloTimeout bounds the wait for an edge's hello.
	HelloTimeout time.Duration
	// MaxRecvMsgSize bounds a request; larger ones fail with
	// ResourceExhausted before any handler runs.
	MaxRecvMsgSize int
	// ShutdownGrace bounds how long Serve waits for calls in flight.
	ShutdownGrace time.Duration
	// MaxConnections bounds the open gRPC connections; more are closed as
	// soon as they are accepted (default DefaultMaxConnections).
	MaxConnections int
	// MaxConcurrentStreams bounds the concurrent streams and calls of one
	// connection; clients wait for a free one (default
	// DefaultMaxConcurrentStreams).
	MaxConcurrentStreams uint32
	// MaxStreamsPerCaller bounds the open streams of one caller across
	// its connections; more are refused with ResourceExhausted (default
	// DefaultMaxStreamsPerCaller).
	MaxStreamsPerCaller int
	// UpstreamLimits are the upstream rate limits of namespaces whose
	// configuration sets none (zero: the edges' own defaults).
	UpstreamLimits snapshot.UpstreamLimits
	// GRPCOptions are added to the gRPC server's, e.g. grpc.Creds for TLS.
	GRPCOptions []grpc.ServerOption
	// Clash, when set, adjusts the Clash manager's options before it is
	// built (tests swap the prober or shorten intervals). It is only
	// called when the configuration enables Clash.
	Clash func(*clash.Options)
	// Metrics, when set, receives the push server's, the gRPC
	// connections' and the Clash pool's metrics.
	Metrics *metrics.Metrics
	// ProofTTL is how long a proof of upstream access is trusted before it
	// is asked again (0: proof's default). A revoked credential stops
	// serving shared content after it.
	ProofTTL time.Duration
	// NodeAccess, when set (in-cluster), answers the admin API's
	// ListNodes; standalone it answers FailedPrecondition.
	NodeAccess admin.NodeAccess
}

// Server is a control plane. Serve it once.
type Server struct {
	log    *slog.Logger
	grpc   *grpc.Server
	health *health.Server
	store  *configstore.Store
	push   *push.Server
	clash  *clash.Manager // nil when Clash is disabled
	grace  time.Duration
	// maxConns caps the listener Serve is given; refused counts what it
	// closes (nil without metrics).
	maxConns int
	refused  func()
	// serving is true from Serve's start until its shutdown begins.
	serving atomic.Bool
}

// New loads the configuration and builds the server; it fails when the
// configuration does not validate.
func New(ctx context.Context, opts Options) (*Server, error) {
	if opts.Source == nil {
		return nil, errors.New("server: Options.Source is required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	st, err := opts.Source.Load(ctx)
	if err != nil {
		return nil, fmt.Errorf("load configuration: %w", err)
	}
	authn := opts.Authenticator
	if authn == nil {
		if authn, err = staticTokens(st); err != nil {
			return nil, err
		}
	}
	cfg, err := configstore.New(st, opts.Source, snapshot.Builder{Limits: opts.UpstreamLimits}, log.With("component", "store"))
	if err != nil {
		return nil, err
	}
	mgr, err := newClash(st, cfg, opts, log)
	if err != nil {
		return nil, err
	}
	pushOpts := []push.Option{push.WithDebounce(opts.Debounce)}
	var adminOpts []admin.Option
	if opts.NodeAccess != nil {
		adminOpts = append(adminOpts, admin.WithNodeAccess(opts.NodeAccess))
	}
	if mgr != nil {
		pushOpts = append(pushOpts, push.WithProxyFailures(mgr))
		adminOpts = append(adminOpts, admin.WithProxies(mgr))
	}
	if opts.MaxDebounce > 0 {
		pushOpts = append(pushOpts, push.WithMaxDebounce(opts.MaxDebounce))
	}
	if opts.HelloTimeout > 0 {
		pushOpts = append(pushOpts, push.WithHelloTimeout(opts.HelloTimeout))
	}
	var metricOpts []grpc.ServerOption
	if m := opts.Metrics; m != nil {
		pushOpts = append(pushOpts, push.WithObserver(m))
		metricOpts = append(metricOpts, grpc.StatsHandler(m.StatsHandler()))
		if mgr != nil {
			if err := m.RegisterClash(mgr); err != nil {
				return nil, fmt.Errorf("register Clash metrics: %w", err)
			}
		}
	}
	ps := push.New(cfg.Current(), log.With("component", "push"), pushOpts...)
	cfg.Subscribe(ps)
	brk, err := newBroker(ctx, st, cfg, opts, log.With("component", "broker"))
	if err != nil {
		return nil, err
	}

	maxRecv := opts.MaxRecvMsgSize
	if maxRecv <= 0 {
		maxRecv = DefaultMaxRecvMsgSize
	}
	streams := opts.MaxConcurrentStreams
	if streams == 0 {
		streams = DefaultMaxConcurrentStreams
	}
	var streamRefused func()
	if opts.Metrics != nil {
		streamRefused = opts.Metrics.StreamRefused
	}
	perCaller := calllimit.New(cmp.Or(opts.MaxStreamsPerCaller, DefaultMaxStreamsPerCaller), streamRefused)
	policy := auth.Policy{
		selfhostv1.AdminService_ServiceDesc.ServiceName:           auth.RequireAdmin,
		selfhostv1.ConfigDiscoveryService_ServiceDesc.ServiceName: auth.RequireEdge,
		selfhostv1.StorageBrokerService_ServiceDesc.ServiceName:   auth.RequireEdge,
		healthpb.Health_ServiceDesc.ServiceName:                   auth.Public,
		// Reflection answers any authenticated caller (grpcurl -H
		// 'authorization: Bearer …' list); only health is anonymous.
		"grpc.reflection.v1.ServerReflection":      auth.RequireAuthenticated,
		"grpc.reflection.v1alpha.ServerReflection": auth.RequireAuthenticated,
	}
	gs := grpc.NewServer(append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxRecv),
		grpc.MaxConcurrentStreams(streams),
		grpc.MaxHeaderListSize(maxHeaderListSize),
		grpc.ConnectionTimeout(handshakeTimeout),
		grpc.KeepaliveParams(keepaliveParams),
		grpc.KeepaliveEnforcementPolicy(keepalivePolicy),
		grpc.ChainUnaryInterceptor(logCalls(log), auth.UnaryInterceptor(authn, policy)),
		// After authentication: the limiter counts streams per identity.
		grpc.ChainStreamInterceptor(auth.StreamInterceptor(authn, policy), perCaller.StreamInterceptor()),
	}, append(metricOpts, opts.GRPCOptions...)...)...)
	selfhostv1.RegisterConfigDiscoveryServiceServer(gs, ps)
	if brk != nil {
		selfhostv1.RegisterStorageBrokerServiceServer(gs, brk)
	}
	selfhostv1.RegisterAdminServiceServer(gs, admin.New(cfg, ps, log.With("component", "admin"), adminOpts...))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)

	grace := opts.ShutdownGrace
	if grace <= 0 {
		grace = DefaultShutdownGrace
	}
	log.Info("control plane configured", "config_version", cfg.Current().Version,
		"namespaces", cfg.Current().NamespaceNames(), "upstreams", len(cfg.Current().Upstreams))
	maxConns := opts.MaxConnections
	if maxConns <= 0 {
		maxConns = DefaultMaxConnections
	}
	var refused func()
	if opts.Metrics != nil {
		refused = opts.Metrics.ConnRefused
	}
	return &Server{log: log, grpc: gs, health: hs, store: cfg, push: ps, clash: mgr, grace: grace,
		maxConns: maxConns, refused: refused}, nil
}

// Serve serves gRPC on lis and pushes configuration changes until ctx
// ends, then stops: health turns NOT_SERVING, edge streams end with
// Unavailable (edges reconnect elsewhere or later), calls in flight get
// ShutdownGrace to finish. It returns nil after a shutdown asked for by
// ctx. At most MaxConnections connections of lis are open at once.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	lis = connlimit.New(lis, s.maxConns, s.refused)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.push.Run(ctx) })
	if s.clash != nil {
		g.Go(func() error { return s.clash.Run(ctx) })
	}
	g.Go(func() error {
		if err := s.grpc.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serve gRPC on %s: %w", lis.Addr(), err)
		}
		return nil
	})
	s.serving.Store(true)
	g.Go(func() error {
		<-ctx.Done()
		s.serving.Store(false)
		s.health.Shutdown()
		stopped := make(chan struct{})
		go func() {
			s.grpc.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-time.After(s.grace):
			s.log.Warn("calls still running after the shutdown grace period; closing them", "grace", s.grace)
			s.grpc.Stop()
		}
		return nil
	})
	s.log.Info("serving gRPC", "addr", lis.Addr().String())
	if err := g.Wait(); err != nil {
		return err
	}
	s.log.Info("control plane stopped")
	return nil
}

// Ready reports whether the server serves gRPC: Serve has started (the
// configuration was loaded before, by New) and no shutdown has begun.
func (s *Server) Ready() error {
	if !s.serving.Load() {
		return errors.New("gRPC server not serving")
	}
	return nil
}

// Store is the committed configuration, for in-process tests and
// benchmarks that change it without the admin API.
func (s *Server) Store() *configstore.Store { return s.store }

// Clash is the Clash manager, nil when Clash is disabled.
func (s *Server) Clash() *clash.Manager { return s.clash }

// PushStats are the push server's counters.
func (s *Server) PushStats() push.Stats { return s.push.Stats() }

func staticTokens(st *config.State) (*auth.StaticTokens, error) {
	admins := make([]string, len(st.AdminTokens))
	for i, t := range st.AdminTokens {
		admins[i] = t.Reveal()
	}
	edges := map[string]string{}
	for name, ns := range st.Namespaces {
		if ns.EdgeToken != "" {
			edges[name] = ns.EdgeToken.Reveal()
		}
	}
	a, err := auth.NewStaticTokens(admins, edges)
	if err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	return a, nil
}

// newClash builds the Clash manager from the configuration, or returns
// nil when Clash is disabled.
func newClash(st *config.State, cfg *configstore.Store, opts Options, log *slog.Logger) (*clash.Manager, error) {
	c := st.Clash
	if !c.Enabled {
		return nil, nil
	}
	src, err := clash.NewHTTPSource(c.SubscriptionURL.Reveal())
	if err != nil {
		return nil, fmt.Errorf("clash.subscriptionUrl: %w", err)
	}
	co := clash.Options{
		Source:          src,
		ConfigStore:     cfg,
		Selector:        clash.ToleranceSelector{Tolerance: clash.Tolerance{Percent: c.TolerancePercent, Min: c.ToleranceMin}},
		Logger:          log.With("component", "clash"),
		RefreshInterval: c.RefreshInterval,
		ProbeInterval:   c.ProbeInterval,
		ProbeTimeout:    c.ProbeTimeout,
		ProbeURL:        c.ProbeURL,
	}
	if opts.Clash != nil {
		opts.Clash(&co)
	}
	return clash.NewManager(co)
}
