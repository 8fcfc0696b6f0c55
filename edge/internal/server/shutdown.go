package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/netutil"
)

// Shutdown defaults: the drain delay covers the time Kubernetes takes to
// remove a not-ready endpoint from kube-proxy and the Service's clients;
// the timeout lets a large blob transfer finish. The pod's
// terminationGracePeriodSeconds must exceed their sum.
const (
	DefaultShutdownDelay   = 5 * time.Second
	DefaultShutdownTimeout = 60 * time.Second
	// DefaultMaxConnections caps the registry listener's open connections.
	DefaultMaxConnections = 1024
	// DefaultMaxUpstreamRPS and DefaultUpstreamBurst bound one namespace's
	// upstream requests: a cold pull of a large image is a few dozen, so
	// a tenant pulling hard cannot use up the upstream's rate limits and
	// the shared egress for every other namespace.
	DefaultMaxUpstreamRPS = 50
	DefaultUpstreamBurst  = 100
	// DefaultFillQueueWait is how long a cold blob waits for one of the
	// namespace's fill slots before its clients get 429.
	DefaultFillQueueWait = 10 * time.Second
)

// shutdown is how a server stops when its context ends.
type shutdown struct {
	// delay keeps serving new requests after the context ends (with
	// /readyz already 503), because endpoint removal propagates
	// asynchronously: requests routed to the edge meanwhile must not be
	// refused.
	delay time.Duration
	// timeout bounds the wait for in-flight requests after the listener
	// closed; zero or negative means no bound.
	timeout time.Duration
	// finish, when set, runs after the last request ended, within the
	// same timeout: background work (blob fills committing to storage)
	// that must not be cut off.
	finish func(ctx context.Context) error
	log    *slog.Logger
}

// serve runs srv on ln until ctx ends; then it calls draining (if
// non-nil), keeps serving for the delay, closes the listener and waits for
// in-flight requests (http.Server.Shutdown) up to the timeout. Requests
// still running then are cut off: their transfers end broken, never
// complete and wrong, because a blob is only stored once verified.
func (s shutdown) serve(ctx context.Context, srv *http.Server, ln net.Listener, draining func()) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	if draining != nil {
		draining()
	}
	if s.delay > 0 {
		t := time.NewTimer(s.delay)
		select {
		case <-t.C:
		case err := <-errc:
			t.Stop()
			return err
		}
	}
	sctx := context.WithoutCancel(ctx)
	if s.timeout > 0 {
		var cancel context.CancelFunc
		sctx, cancel = context.WithTimeout(sctx, s.timeout)
		defer cancel()
	}
	start := time.Now()
	err := srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		if s.log != nil {
			s.log.Warn("shutdown timeout reached; cutting off the requests still running", "shutdown_timeout", s.timeout.String())
		}
		_ = srv.Close()
		return nil
	}
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if s.finish != nil {
		if err := s.finish(sctx); err != nil && s.log != nil {
			s.log.Warn("shutdown timeout reached; background work cut off", "err", err)
		}
	}
	if draining != nil && s.log != nil {
		s.log.Info("in-flight requests finished", "waited", time.Since(start).Round(time.Millisecond).String())
	}
	return nil
}

// listen opens the registry listener, capped at cfg.MaxConnections open
// connections (zero or negative: no cap). Connections beyond the cap wait
// in the kernel's accept queue instead of each costing a goroutine, a
// buffer and possibly a fill.
func (cfg Config) listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	if cfg.MaxConnections > 0 {
		ln = netutil.LimitListener(ln, cfg.MaxConnections)
	}
	tln, err := cfg.tlsListener(ln)
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	return tln, nil
}
