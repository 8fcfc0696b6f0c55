// Package probes is the control plane's plain-HTTP port (--http-listen):
// /healthz for liveness, /readyz for readiness and /metrics for
// Prometheus. It is plain HTTP on purpose: kubelet's probes and most
// scrapers cannot present the CA the gRPC port's TLS needs, and nothing
// on this port is secret.
package probes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Check reports why a part of the control plane is not ready (nil: ready).
// It must be fast: /readyz calls every check on every probe.
type Check func() error

// Server serves the probes and the metrics.
type Server struct {
	mu     sync.RWMutex
	checks map[string]Check
	mux    *http.ServeMux
	log    *slog.Logger
}

// New returns a Server serving metrics on /metrics (nil: no /metrics).
func New(metrics http.Handler, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{checks: map[string]Check{}, mux: http.NewServeMux(), log: log}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	s.mux.HandleFunc("GET /readyz", s.readyz)
	if metrics != nil {
		s.mux.Handle("GET /metrics", metrics)
	}
	return s
}

// AddCheck adds a readiness check under name (shown by /readyz); a check
// of the same name is replaced.
func (s *Server) AddCheck(name string, c Check) {
	s.mu.Lock()
	s.checks[name] = c
	s.mu.Unlock()
}

// Ready runs every check and joins the failures, in name order.
func (s *Server) Ready() error {
	s.mu.RLock()
	names := make([]string, 0, len(s.checks))
	for n := range s.checks {
		names = append(names, n)
	}
	slices.Sort(names)
	checks := make([]Check, len(names))
	for i, n := range names {
		checks[i] = s.checks[n]
	}
	s.mu.RUnlock()
	var errs []error
	for i, c := range checks {
		if err := c(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", names[i], err))
		}
	}
	return errors.Join(errs...)
}

// readyz answers 200 "ok" or 503 with one failed check per line.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := s.Ready(); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(strings.TrimSpace(err.Error()) + "\n"))
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// Handler is the HTTP handler, for tests.
func (s *Server) Handler() http.Handler { return s.mux }

// Serve serves on lis until ctx ends, then shuts down.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	srv := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	s.log.Info("serving health and metrics over HTTP", "addr", lis.Addr().String(), "paths", "/healthz /readyz /metrics")
	select {
	case err := <-errc:
		return fmt.Errorf("serve HTTP probes on %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return nil
}
