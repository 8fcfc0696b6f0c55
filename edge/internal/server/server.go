package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/cache"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/metrics"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/registry"
)

// Run serves the edge until ctx is cancelled. ready, when non-nil, receives
// the bound registry address once the listener is open.
func Run(ctx context.Context, cfg Config, log *slog.Logger, ready func(addr string)) error {
	table, err := cfg.RouteTable()
	if err != nil {
		return err
	}
	creds, err := cfg.LoadCredentials()
	if err != nil {
		return err
	}
	store, kind, err := cfg.OpenStore(ctx)
	if err != nil {
		return err
	}
	snap, err := buildSnapshot(table, creds, log)
	if err != nil {
		return err
	}
	ups := &upstreamSet{}
	ups.cur.Store(snap)

	m := metrics.New()
	spool := cfg.SpoolDir
	if spool == "" {
		spool = filepath.Join(cfg.Storage, "_spool")
		if kind == "s3" {
			spool = filepath.Join(os.TempDir(), "edge-spool")
		}
	}
	c, err := cache.New(store, ups, cfg.Namespace, m,
		cache.WithTagTTL(cfg.TagTTL), cache.WithSpoolDir(spool), cache.WithLogger(log))
	if err != nil {
		return err
	}
	reg := registry.New(ups, c, m, log)

	mux := http.NewServeMux()
	mux.Handle("/v2/", withAccessLog(reg, m, log))
	mux.Handle("/v2", withAccessLog(reg, m, log))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.Handle("GET /readyz", readiness(c, kind))
	if cfg.MetricsListen == "" {
		mux.Handle("GET /metrics", m.Handler())
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	log.Info("edge serving", "addr", ln.Addr().String(), "storage", kind, "namespace", cfg.Namespace,
		"upstreams", len(table.Upstreams()), "tag_ttl", cfg.TagTTL.String())
	if ready != nil {
		ready(ln.Addr().String())
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serve(gctx, srv, ln) })
	if cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("listen metrics %s: %w", cfg.MetricsListen, err)
		}
		mmux := http.NewServeMux()
		mmux.Handle("GET /metrics", m.Handler())
		g.Go(func() error {
			return serve(gctx, &http.Server{Handler: mmux, ReadHeaderTimeout: 10 * time.Second}, mln)
		})
	}
	return g.Wait()
}

// serve runs srv on ln until ctx ends, then drains in-flight pulls briefly.
func serve(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// readiness reports ready while storage answers; when it does not, the edge
// still serves (from upstream, without caching) and says so.
func readiness(c *cache.Cache, kind string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		status := map[string]string{"storage": kind, "mode": "caching"}
		if err := c.CheckStorage(ctx); err != nil {
			status["mode"] = "degraded: storage unavailable, streaming from upstream without caching"
			status["error"] = err.Error()
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(status)
	})
}
