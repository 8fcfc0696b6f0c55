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
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/blob"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/cache"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/control"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/metrics"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/oci"
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
	var cps *cpStorage
	var store blob.Store
	var kind string
	if cfg.Storage == StorageControlPlane {
		if cfg.ControlPlane == "" {
			return errors.New("--storage=control-plane needs --control-plane: the storage comes from the control plane's configuration")
		}
		cps = newCPStorage(log)
		store, kind = cps, "s3"
	} else if store, kind, err = cfg.OpenStore(ctx); err != nil {
		return err
	}
	nodes, err := cfg.ProxyNodes()
	if err != nil {
		return err
	}
	m := metrics.New()
	px := newProxies(m, log, cfg.ProxyFirstByteTimeout)
	snap, err := flagSnapshot(table, creds, nodes, px, log)
	if err != nil {
		return err
	}
	ups := &upstreamSet{}
	ups.cur.Store(snap)
	c, err := cache.New(store, ups, cfg.Namespace, m,
		cache.WithTagTTL(cfg.TagTTL), cache.WithSpoolDir(cfg.spoolDir(kind)), cache.WithLogger(log))
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	// The listener is open but not yet served: the persisted configuration
	// is applied before the first request is answered.
	var cp *control.Client
	if cfg.ControlPlane != "" {
		if cp, err = newControlClient(cfg, kind, ln.Addr().String(), ups, c, m, px, cps, log); err != nil {
			_ = ln.Close()
			return err
		}
	}

	reg := registry.New(ups, c, m, log)
	mux := http.NewServeMux()
	api := withAccessLog(reg, m, log)
	if cps != nil {
		api = untilStorage(cps, api)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.Handle("GET /readyz", readiness(c, kind, cp, cps))
	if cfg.MetricsListen == "" {
		mux.Handle("GET /metrics", m.Handler())
	}
	log.Info("edge serving", "addr", ln.Addr().String(), "storage", kind, "namespace", cfg.Namespace,
		"upstreams", len(ups.cur.Load().table.Upstreams()), "tag_ttl", cfg.TagTTL.String(),
		"control_plane", cfg.ControlPlane, "config_version", ups.cur.Load().version, "proxy_nodes", nodeNames(nodes))
	if ready != nil {
		ready(ln.Addr().String())
	}
	srv := &http.Server{Handler: registryFirst(api, mux), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serve(gctx, srv, ln) })
	if cp != nil {
		g.Go(func() error { return cp.Run(gctx) })
	}
	if cps != nil {
		g.Go(func() error {
			select {
			case <-cps.changed:
				return errStorageChanged
			case <-gctx.Done():
				return nil
			}
		})
	}
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

// newControlClient wires the control-plane client to the edge and applies
// the persisted configuration, if any.
func newControlClient(cfg Config, kind, boundAddr string, ups *upstreamSet, c *cache.Cache, m *metrics.Metrics, px *proxies, cps *cpStorage, log *slog.Logger) (*control.Client, error) {
	pod := cfg.PodName
	if pod == "" {
		pod, _ = os.Hostname()
	}
	addr := cfg.AdvertiseAddress
	if addr == "" {
		addr = boundAddr
	}
	if cfg.ControlPlaneTokenFile == "" {
		log.Warn("no --control-plane-token-file: the control plane will see an unauthenticated edge")
	}
	applier := &configApplier{set: ups, fills: c, proxies: px, storage: cps, log: log}
	cp, err := control.New(cfg.ControlPlane, cfg.Namespace, applier, metricStats{m}, tagInvalidator{set: ups, cache: c},
		control.WithTokenFile(cfg.ControlPlaneTokenFile), control.WithPod(pod), control.WithAddress(addr),
		control.WithEdgeVersion(cfg.Version), control.WithStateDir(cfg.stateDir(kind)),
		control.WithStatsInterval(cfg.StatsInterval), control.WithLogger(log.With("component", "control")))
	if err != nil {
		return nil, err
	}
	px.obs.setReporter(cp)
	if cps != nil {
		// The persisted configuration has no storage credentials: the edge
		// waits, not ready, for the control plane to send them again.
		log.Info("storage comes from the control plane: the persisted configuration is not restored; not ready until the control plane sends storage.s3")
		return cp, nil
	}
	if _, err := cp.Restore(); err != nil {
		// The edge still serves, on its flags, until the control plane
		// sends a snapshot.
		log.Warn("persisted configuration not applied; starting on the flag defaults", "err", err)
	}
	return cp, nil
}

// spoolDir is where in-flight fills are spooled.
func (cfg Config) spoolDir(kind string) string {
	switch {
	case cfg.SpoolDir != "":
		return cfg.SpoolDir
	case kind == "s3":
		return filepath.Join(os.TempDir(), "edge-spool")
	}
	return filepath.Join(cfg.Storage, "_spool")
}

// stateDir is where the last good configuration is kept.
func (cfg Config) stateDir(kind string) string {
	switch {
	case cfg.StateDir != "":
		return cfg.StateDir
	case kind == "s3":
		return "edge-state"
	}
	return filepath.Join(cfg.Storage, "_state")
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

// readyStatus is the /readyz body.
type readyStatus struct {
	Storage string `json:"storage"`
	Mode    string `json:"mode"`
	Error   string `json:"error,omitempty"`
	// ControlPlane is connected, disconnected or disabled (no
	// --control-plane).
	ControlPlane string `json:"control_plane"`
	// ConfigVersion is the control-plane configuration in effect; empty
	// while the edge runs on its flags.
	ConfigVersion string `json:"config_version"`
	LastNACK      string `json:"last_nack,omitempty"`
}

// readiness reports ready while storage answers; when it does not, the edge
// still serves (from upstream, without caching) and says so. A lost control
// plane does not make the edge unready either: it serves its last good
// configuration. The one unready state (503) is an edge with
// --storage=control-plane that has no storage yet: it serves nothing, so
// the injector must not rewrite images to it.
func readiness(c *cache.Cache, kind string, cp *control.Client, cps *cpStorage) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		st := readyStatus{Storage: kind, Mode: "caching", ControlPlane: "disabled"}
		code := http.StatusOK
		if cps != nil && !cps.ready() {
			st.Mode, st.Error, code = "not ready: waiting for storage from the control plane", errNoStorage.Error(), http.StatusServiceUnavailable
		} else if err := c.CheckStorage(ctx); err != nil {
			st.Mode = "degraded: storage unavailable, streaming from upstream without caching"
			st.Error = err.Error()
		}
		if cp != nil {
			cs := cp.Status()
			st.ControlPlane, st.ConfigVersion, st.LastNACK = "disconnected", cs.Version, cs.LastNACK
			if cs.Connected {
				st.ControlPlane = "connected"
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(st)
	})
}

// untilStorage answers registry requests with 503 UNAVAILABLE until the
// control plane's storage is open.
func untilStorage(cps *cpStorage, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !cps.ready() {
			w.Header().Set("Retry-After", "5")
			oci.WriteError(w, r, oci.NewError(http.StatusServiceUnavailable, oci.CodeUnavailable,
				"edge not ready: waiting for storage from the control plane"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// registryFirst sends every /v2 request to the registry handler before
// ServeMux sees it: ServeMux answers paths with "." or ".." segments with a
// redirect to the cleaned path, and a registry must refuse them with
// NAME_INVALID instead.
func registryFirst(api, rest http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2" || strings.HasPrefix(r.URL.Path, "/v2/") {
			api.ServeHTTP(w, r)
			return
		}
		rest.ServeHTTP(w, r)
	})
}
