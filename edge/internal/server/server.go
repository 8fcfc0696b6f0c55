package server

import (
	"context"
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

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/brokerstore"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/cache"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/configclient"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/metrics"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/registry"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
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
	var cps *brokerstore.Deferred
	var store blob.Store
	var kind string
	if cfg.Storage == StorageControlPlane {
		if cfg.ControlPlane == "" {
			return errors.New("--storage=control-plane needs --control-plane: the storage is brokered by the control plane")
		}
		cps = brokerstore.NewDeferred(log, cfg.StorageGrantTTL)
		defer cps.Close()
		store, kind = cps, storageKindBrokered
	} else if store, kind, err = cfg.OpenStore(ctx); err != nil {
		return err
	}
	nodes, err := cfg.ProxyNodes()
	if err != nil {
		return err
	}
	m := metrics.New()
	px := newProxies(m, log, cfg.ProxyFirstByteTimeout)
	allowInternal := map[string]bool{}
	for _, p := range cfg.InternalRedirects {
		allowInternal[p] = true
	}
	snap, err := flagSnapshot(table, creds, nodes, allowInternal, px, log)
	if err != nil {
		return err
	}
	ups := &upstreamSet{}
	ups.cur.Store(snap)
	c, err := cache.New(store, cfg.Namespace, m,
		cache.WithTagTTL(cfg.TagTTL), cache.WithSpoolDir(cfg.spoolDir(kind)), cache.WithLogger(log),
		cache.WithFillQueueWait(cfg.FillQueueWait))
	if err != nil {
		return err
	}
	// The flags' limits hold until a control-plane policy says otherwise.
	c.SetUpstreamRate(cfg.Limits.RPS, cfg.Limits.Burst)

	ln, err := cfg.listen()
	if err != nil {
		return err
	}
	// The listener is open but not yet served: the persisted configuration
	// is applied before the first request is answered.
	var cp *configclient.Client
	g := &gate{cps: cps}
	if cfg.ControlPlane != "" {
		if cp, err = newControlClient(cfg, kind, ln.Addr().String(), ups, c, m, px, cps, allowInternal, log); err != nil {
			_ = ln.Close()
			return err
		}
		g.cp = cp
	}

	reg := registry.New(ups, c, m, log)
	mux := http.NewServeMux()
	api := g.guard(withAccessLog(reg, m, log))
	probe := &storageProbe{check: c.CheckStorage, ttl: storageProbeTTL, now: time.Now}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.Handle("GET /readyz", readiness(g, kind, probe, cp))
	if cfg.MetricsListen == "" {
		mux.Handle("GET /metrics", m.Handler())
	}
	log.Info("edge serving", "addr", ln.Addr().String(), "storage", kind, "namespace", cfg.Namespace,
		"upstreams", len(ups.cur.Load().table.Upstreams()), "tag_ttl", cfg.TagTTL.String(),
		"control_plane", cfg.ControlPlane, "config_version", ups.cur.Load().version, "proxy_nodes", nodeNames(nodes),
		"ready", g.waiting() == "", "max_connections", cfg.MaxConnections)
	if ready != nil {
		ready(ln.Addr().String())
	}
	srv := &http.Server{Handler: registryFirst(api, mux), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	sd := shutdown{delay: cfg.ShutdownDelay, timeout: cfg.ShutdownTimeout, log: log}
	eg, gctx := errgroup.WithContext(ctx)
	main := sd
	main.finish = c.WaitFills
	eg.Go(func() error {
		return main.serve(gctx, srv, ln, func() {
			g.draining.Store(true)
			log.Info("shutting down: /readyz reports not ready; still serving during the drain delay",
				"shutdown_delay", sd.delay.String(), "shutdown_timeout", sd.timeout.String())
		})
	})
	if cp != nil {
		eg.Go(func() error { return cp.Run(gctx) })
	}
	if cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("listen metrics %s: %w", cfg.MetricsListen, err)
		}
		mmux := http.NewServeMux()
		mmux.Handle("GET /metrics", m.Handler())
		eg.Go(func() error {
			// Scraped through the drain too; it closes with the registry.
			return sd.serve(gctx, &http.Server{Handler: mmux, ReadHeaderTimeout: 10 * time.Second}, mln, nil)
		})
	}
	if err := eg.Wait(); err != nil {
		return err
	}
	log.Info("edge stopped")
	return nil
}

// newControlClient wires the control-plane client to the edge and applies
// the persisted configuration, if any.
func newControlClient(cfg Config, kind, boundAddr string, ups *upstreamSet, c *cache.Cache, m *metrics.Metrics, px *proxies, cps *brokerstore.Deferred, allowInternal map[string]bool, log *slog.Logger) (*configclient.Client, error) {
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
	stateDir, err := cfg.stateDir(kind)
	if err != nil {
		return nil, err
	}
	applier := &configApplier{set: ups, fills: c, proxies: px, storage: cps, log: log, allowInternal: allowInternal, limits: cfg.Limits}
	copts := []configclient.Option{
		configclient.WithTokenFile(cfg.ControlPlaneTokenFile), configclient.WithPod(pod), configclient.WithAddress(addr),
		configclient.WithEdgeVersion(cfg.Version), configclient.WithStateDir(stateDir),
		configclient.WithStatsInterval(cfg.StatsInterval), configclient.WithLogger(log.With("component", "control")),
	}
	if cfg.ControlPlaneCAFile != "" {
		creds, err := configclient.NewCAFileCredentials(cfg.ControlPlaneCAFile)
		if err != nil {
			return nil, fmt.Errorf("--control-plane-ca-file: %w", err)
		}
		copts = append(copts, configclient.WithTransportCredentials(creds))
	}
	cp, err := configclient.New(cfg.ControlPlane, cfg.Namespace, applier, metricStats{m}, tagInvalidator{set: ups, cache: c}, copts...)
	if err != nil {
		return nil, err
	}
	px.obs.setReporter(cp)
	if cps != nil {
		conn, err := cp.DialServices()
		if err != nil {
			return nil, err
		}
		cps.Attach(conn)
		// Every object is reached through the control plane: without it
		// there is no storage to serve from, so the persisted
		// configuration is not restored and the edge waits, not ready.
		log.Info("storage brokered by the control plane: the persisted configuration is not restored; not ready until the control plane sends this namespace's configuration")
		return cp, nil
	}
	// Fail closed either way: without a restored configuration the edge
	// answers 503 until the control plane sends this namespace's one.
	switch v, err := cp.Restore(); {
	case err != nil:
		log.Warn("persisted configuration not applied; not ready until the control plane sends this namespace's configuration", "state_dir", stateDir, "err", err)
	case v == "":
		log.Info("no persisted configuration; not ready until the control plane sends this namespace's configuration", "state_dir", stateDir)
	}
	return cp, nil
}

// spoolDir is where in-flight fills are spooled.
func (cfg Config) spoolDir(kind string) string {
	switch {
	case cfg.SpoolDir != "":
		return cfg.SpoolDir
	case kind == "s3", kind == storageKindBrokered:
		return filepath.Join(os.TempDir(), "edge-spool")
	}
	return filepath.Join(cfg.Storage, "_spool")
}

// stateDir is where the last good configuration is kept: one directory
// per namespace, so edges of different namespaces sharing one storage
// never read or overwrite each other's file.
func (cfg Config) stateDir(kind string) (string, error) {
	if cfg.StateDir != "" {
		return cfg.StateDir, nil
	}
	// The namespace becomes a path element: it must be exactly one.
	if !filepath.IsLocal(cfg.Namespace) || strings.ContainsAny(cfg.Namespace, `/\`) || cfg.Namespace == "." {
		return "", fmt.Errorf("--namespace %q cannot name a state directory; set --state-dir", cfg.Namespace)
	}
	if kind == "s3" || kind == storageKindBrokered {
		return filepath.Join("edge-state", cfg.Namespace), nil
	}
	return filepath.Join(cfg.Storage, "_state", cfg.Namespace), nil
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
