// Command controlplane runs the k8s-selfhost-repo control plane
// (docs/control-protocol.md). Standalone, with no Kubernetes:
//
//	controlplane --standalone --config controlplane.yaml --grpc-listen 127.0.0.1:9090
//
// In a cluster (the Helm chart's Deployment; docs/kubernetes.md):
//
//	controlplane --namespace selfhost-system --edge-image IMAGE \
//	  --edge-control-plane selfhost-controlplane.selfhost-system.svc:9090 \
//	  --webhook-service selfhost-controlplane:443
//
// Removing what the in-cluster mode created (the chart's pre-delete hook):
//
//	controlplane cleanup --namespace selfhost-system
//
// In a cluster gRPC is served over TLS with a certificate of the control
// plane's own CA (--grpc-tls), and /healthz, /readyz and /metrics over
// plain HTTP on --http-listen (:9091).
//
// main only wires flags to constructors; the work is in
// controlplane/internal/grpcserver and the packages it assembles.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config/configfile"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/grpcserver"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/metrics"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/probes"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/snapshot"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/flagenv"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "cleanup" {
		mainCleanup(os.Args[2:])
		return
	}
	f, env, err := parseFlags(os.Args[1:], os.Environ(), os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: f.logLevel}))
	flagenv.LogUnknown(log, env)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, f, log); err != nil {
		if problems := config.Problems(err); len(problems) > 1 {
			// One line per bad value, each naming its field.
			for _, p := range problems {
				log.Error("invalid configuration", "config", f.config, "problem", p.Error())
			}
		}
		log.Error("control plane stopped", "err", err)
		os.Exit(1)
	}
}

// mainCleanup is `controlplane cleanup`: the uninstall hook.
func mainCleanup(args []string) {
	f, env, err := parseCleanupFlags(args, os.Environ(), os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "controlplane cleanup:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: f.logLevel}))
	flagenv.LogUnknown(log, env)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := runCleanup(ctx, f, log); err != nil {
		log.Error("cleanup failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, f flags, log *slog.Logger) error {
	m := metrics.New()
	opts := grpcserver.Options{Logger: log, Debounce: f.debounce, Metrics: m, ProofTTL: f.proofTTL,
		MaxConnections: f.maxGRPCConns, MaxConcurrentStreams: uint32(f.maxGRPCStreams), MaxStreamsPerCaller: f.maxCallerStreams,
		UpstreamLimits: snapshot.UpstreamLimits{RPS: uint32(f.upstreamRPS), Burst: uint32(f.upstreamBurst)}}
	if f.tlsCert != "" {
		creds, err := credentials.NewServerTLSFromFile(f.tlsCert, f.tlsKey)
		if err != nil {
			return fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		opts.GRPCOptions = append(opts.GRPCOptions, grpc.Creds(creds))
	}
	if f.standalone {
		opts.Source = configfile.New(f.config, f.stateDir, log.With("component", "config"))
		return serve(ctx, f, opts, probes.New(m.Handler(), log.With("component", "probes")), nil)
	}
	return runInCluster(ctx, f, opts, log)
}

// serve runs the gRPC server, the HTTP probes (when --http-listen) and
// next to them the jobs in extra, until ctx ends or one of them fails.
func serve(ctx context.Context, f flags, opts grpcserver.Options, p *probes.Server, extra func(context.Context, *grpcserver.Server) []func() error) error {
	ctx, stopRun := drainOnCancel(ctx, f.shutdownDelay, p, opts.Logger)
	defer stopRun()
	srv, err := grpcserver.New(ctx, opts)
	if err != nil {
		return err
	}
	p.AddCheck("grpc", srv.Ready)
	lis, err := net.Listen("tcp", f.grpcListen)
	if err != nil {
		return fmt.Errorf("--grpc-listen: %w", err)
	}
	g, ctx := errgroup.WithContext(ctx)
	if f.httpListen != "" {
		hl, err := net.Listen("tcp", f.httpListen)
		if err != nil {
			_ = lis.Close()
			return fmt.Errorf("--http-listen: %w", err)
		}
		g.Go(func() error { return p.Serve(ctx, hl) })
	}
	g.Go(func() error { return srv.Serve(ctx, lis) })
	if extra != nil {
		for _, job := range extra(ctx, srv) {
			g.Go(job)
		}
	}
	return g.Wait()
}

// drainOnCancel returns a context that ends delay after ctx does (or
// when stop is called). From the moment ctx ends, p's /readyz fails: the
// pod is removed from the Service's endpoints asynchronously, and a
// webhook call sent to a pod that has stopped answering admits the pod
// untouched (failurePolicy Ignore), so the servers keep answering until
// the endpoint is gone.
func drainOnCancel(ctx context.Context, delay time.Duration, p *probes.Server, log *slog.Logger) (context.Context, context.CancelFunc) {
	var draining atomic.Bool
	p.AddCheck("shutdown", func() error {
		if draining.Load() {
			return errors.New("shutting down")
		}
		return nil
	})
	run, stop := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		select {
		case <-ctx.Done():
		case <-run.Done():
			return
		}
		draining.Store(true)
		log.Info("shutting down: /readyz reports not ready; still serving during the drain delay", "shutdown_delay", delay.String())
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-run.Done():
		}
		stop()
	}()
	return run, stop
}
