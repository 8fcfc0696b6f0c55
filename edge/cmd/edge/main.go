// Command edge is the pull-through OCI registry of one namespace (edge/README.md,
// "How a pull goes through the edge"). Standalone it needs no control plane
// and no cluster:
//
//	edge --listen 127.0.0.1:5000 --storage ./data
//
// serves /v2/dockerhub/..., /v2/ghcr/..., /v2/quay/..., /v2/k8s/... from the
// local disk and fetches misses from the upstream registries. With
// --control-plane it takes its upstreams and policy from the control plane
// (docs/control-protocol.md):
//
//	edge --storage ./data --namespace team-a \
//	  --control-plane 127.0.0.1:9090 --control-plane-token-file ./token
//
// Behind a filtered link, a standalone edge reaches its upstreams through
// Clash nodes (docs/edge-proxy.md), tried in order with failover:
//
//	EDGE_PROXY='ss://…#hk-1' edge --storage ./data --proxy @./more-nodes.yaml
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/server"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/proxydial"
)

func main() {
	// mihomo's process-wide set-up, before any proxy node is parsed.
	proxydial.Setup()
	cfg, level, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "edge:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		// The first signal starts the graceful shutdown; a second one
		// (an impatient Ctrl-C) ends the process at once.
		<-ctx.Done()
		stop()
	}()
	if err := server.Run(ctx, cfg, log, nil); err != nil {
		log.Error("edge stopped", "err", err)
		os.Exit(1)
	}
}

// buildVersion is set at link time (-ldflags "-X main.buildVersion=v1.2.3");
// otherwise the module version from the build info is used.
var buildVersion string

func version() string {
	if buildVersion != "" {
		return buildVersion
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}

// listFlag is a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// parseFlags reads flags, with EDGE_<NAME> environment variables as their
// defaults (EDGE_UPSTREAM takes a comma-separated list).
func parseFlags(args []string) (server.Config, slog.Level, error) {
	var cfg server.Config
	var ups, proxies, internalRedirects listFlag
	var level slog.Level
	fs := flag.NewFlagSet("edge", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: edge [flags]\n\nA pull-through OCI registry cache. Every flag can also be set as an environment\nvariable EDGE_<FLAG> (upper case, '-' as '_'); a flag on the command line wins.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	env := func(name, def string) string {
		if v, ok := os.LookupEnv("EDGE_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))); ok {
			return v
		}
		return def
	}
	fs.StringVar(&cfg.Listen, "listen", env("listen", ":5000"), "address of the registry API (`ADDR`)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", env("tls-cert", ""), "serve the registry API (and its probes) over TLS with this certificate (`FILE`, PEM; re-read when it changes); default: plain HTTP, which containerd accepts only on loopback")
	fs.StringVar(&cfg.TLSKey, "tls-key", env("tls-key", ""), "private key of --tls-cert (`FILE`, PEM)")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", env("metrics-listen", ""), "separate address for Prometheus /metrics (`ADDR`); empty: /metrics on --listen")
	fs.StringVar(&cfg.Storage, "storage", env("storage", "./data"), "cache storage: a directory, s3://BUCKET[/PREFIX], or control-plane: the shared storage brokered by the control plane (the edge holds no storage keys: it reads each object by a short-lived presigned URL after the control plane checked its namespace's access, and writes through the control plane, which verifies the digest); needs --control-plane, and the edge is not ready until a configuration with storage.brokered arrives (`PATH|URL|control-plane`)")
	fs.StringVar(&cfg.S3Endpoint, "s3-endpoint", env("s3-endpoint", ""), "S3 endpoint for MinIO and other S3-compatible servers (`URL`); empty: AWS")
	fs.StringVar(&cfg.S3Region, "s3-region", env("s3-region", ""), "S3 region (default from AWS_REGION, else us-east-1)")
	pathStyle, _ := strconv.ParseBool(env("s3-path-style", "false"))
	fs.BoolVar(&cfg.S3PathStyle, "s3-path-style", pathStyle, "address the bucket as ENDPOINT/BUCKET (MinIO, versitygw); S3 credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, shared files, IAM roles)")
	fs.Var(&ups, "upstream", "add or override an upstream as `PREFIX=URL` (repeatable; http:// allowed). Defaults: dockerhub=https://registry-1.docker.io, ghcr=https://ghcr.io, quay (alias quayio)=https://quay.io, k8s=https://registry.k8s.io")
	fs.StringVar(&cfg.CredentialsFile, "upstream-credentials", env("upstream-credentials", ""), "JSON file of upstream credentials: {\"PREFIX\": {\"username\": \"…\", \"password\": \"…\"}} (`FILE`)")
	fs.StringVar(&cfg.Namespace, "namespace", env("namespace", "default"), "namespace whose tag index this edge keeps (`NAME`)")
	ttl, err := time.ParseDuration(env("tag-ttl", "5m"))
	if err != nil {
		return cfg, level, fmt.Errorf("EDGE_TAG_TTL: %w", err)
	}
	fs.DurationVar(&cfg.TagTTL, "tag-ttl", ttl, "how long a tag is trusted before it is revalidated upstream with HEAD")
	fs.StringVar(&cfg.SpoolDir, "spool-dir", env("spool-dir", ""), "directory for in-flight upstream transfers (default: <storage>/_spool, or the temp dir for S3 and control-plane storage)")
	fs.StringVar(&cfg.ControlPlane, "control-plane", env("control-plane", ""), "gRPC address of the control plane (`ADDR`, e.g. 127.0.0.1:9090). Its snapshots replace --upstream, --upstream-credentials and the policy. The edge fails closed: until this namespace's configuration is applied (from the control plane, or persisted in --state-dir by an earlier run) /readyz and every registry request answer 503. Empty: flags only")
	fs.StringVar(&cfg.ControlPlaneTokenFile, "control-plane-token-file", env("control-plane-token-file", ""), "bearer token for the control plane, e.g. a projected ServiceAccount token (`FILE`); read again on every reconnect")
	fs.StringVar(&cfg.ControlPlaneCAFile, "control-plane-ca-file", env("control-plane-ca-file", ""), "dial --control-plane over TLS, trusting the CA certificates in this PEM file and checking that the certificate names the host of --control-plane (`FILE`; read again on every reconnect, so a rotated CA is picked up). In a cluster the controller mounts the ConfigMap selfhost-controlplane-ca here. Empty: plaintext, for loopback")
	fs.StringVar(&cfg.StateDir, "state-dir", env("state-dir", ""), "directory for the last good control-plane configuration (`DIR`); the file holds credentials and is written mode 0600 (default: <storage>/_state/<namespace>, or ./edge-state/<namespace> for S3 and control-plane storage, so edges of different namespaces on one storage never share it)")
	fs.StringVar(&cfg.PodName, "pod-name", env("pod-name", ""), "pod name this edge reports to the control plane (`NAME`; default: the host name)")
	fs.StringVar(&cfg.AdvertiseAddress, "advertise-address", env("advertise-address", ""), "address clients pull from, reported to the control plane (`ADDR`; default: the bound --listen address)")
	statsEvery, err := time.ParseDuration(env("stats-interval", "10s"))
	if err != nil {
		return cfg, level, fmt.Errorf("EDGE_STATS_INTERVAL: %w", err)
	}
	fs.DurationVar(&cfg.StatsInterval, "stats-interval", statsEvery, "how often cache counters are reported to the control plane")
	fs.Var(&proxies, "proxy", "dial every upstream through a Clash node (`NODE`; repeatable, tried in order with failover): a share link (ss://, vmess://, trojan://, vless://, socks5://user:pass@host:port, http://…), a Clash node as YAML/JSON, a YAML list or Clash file with proxies:, or @FILE holding any of these (keeps passwords out of the process list). Used until a control plane sends its own selection. EDGE_PROXY holds one such value (several links separated by newlines)")
	firstByte, err := time.ParseDuration(env("proxy-first-byte-timeout", proxydial.DefaultFirstByteTimeout.String()))
	if err != nil {
		return cfg, level, fmt.Errorf("EDGE_PROXY_FIRST_BYTE_TIMEOUT: %w", err)
	}
	fs.DurationVar(&cfg.ProxyFirstByteTimeout, "proxy-first-byte-timeout", firstByte, "a connection through a proxy node that gets no byte back this long after its first write moves to the next node (a silent proxy: wrong password, unreachable upstream); must exceed the upstream's time to answer")
	shutdownDelay, err := time.ParseDuration(env("shutdown-delay", server.DefaultShutdownDelay.String()))
	if err != nil {
		return cfg, level, fmt.Errorf("EDGE_SHUTDOWN_DELAY: %w", err)
	}
	grantTTL, err := time.ParseDuration(env("storage-grant-ttl", "1m"))
	if err != nil {
		return cfg, level, fmt.Errorf("EDGE_STORAGE_GRANT_TTL: %w", err)
	}
	fs.DurationVar(&cfg.StorageGrantTTL, "storage-grant-ttl", grantTTL, "with --storage=control-plane: how long the control plane's grant of one object (its presigned URL) is reused before it is asked again; at most 1m. Access the control plane withdraws (a revoked credential after --proof-ttl) stops within this")
	fs.DurationVar(&cfg.ShutdownDelay, "shutdown-delay", shutdownDelay, "after SIGTERM, /readyz answers 503 at once but requests are still served this long, while the endpoint's removal reaches kube-proxy and load balancers")
	shutdownTimeout, err := time.ParseDuration(env("shutdown-timeout", server.DefaultShutdownTimeout.String()))
	if err != nil {
		return cfg, level, fmt.Errorf("EDGE_SHUTDOWN_TIMEOUT: %w", err)
	}
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", shutdownTimeout, "after the drain delay the listener closes and in-flight requests (blob transfers) get this long to finish; the pod's terminationGracePeriodSeconds must exceed --shutdown-delay plus this")
	maxConns, err := strconv.Atoi(env("max-connections", strconv.Itoa(server.DefaultMaxConnections)))
	if err != nil {
		return cfg, level, fmt.Errorf("EDGE_MAX_CONNECTIONS: %w", err)
	}
	fs.IntVar(&cfg.MaxConnections, "max-connections", maxConns, "most open connections on --listen; further ones wait in the accept queue (0: no cap)")
	rps, err := strconv.Atoi(env("max-upstream-rps", strconv.Itoa(server.DefaultMaxUpstreamRPS)))
	if err != nil {
		return cfg, level, fmt.Errorf("EDGE_MAX_UPSTREAM_RPS: %w", err)
	}
	fs.IntVar(&cfg.Limits.RPS, "max-upstream-rps", rps, "upstream requests per second of this edge's namespace (manifest GET/HEAD, blob fills and HEADs, tag lists, tag revalidations); beyond it and the burst, pulls that need the upstream get 429 TOOMANYREQUESTS with Retry-After, while cached content is always served. The control plane's policy (max_upstream_requests_per_second) overrides it. 0: unlimited")
	burst, err := strconv.Atoi(env("upstream-burst", strconv.Itoa(server.DefaultUpstreamBurst)))
	if err != nil {
		return cfg, level, fmt.Errorf("EDGE_UPSTREAM_BURST: %w", err)
	}
	fs.IntVar(&cfg.Limits.Burst, "upstream-burst", burst, "upstream requests that may start at once above --max-upstream-rps (the policy's upstream_burst overrides it)")
	fillWait, err := time.ParseDuration(env("fill-queue-wait", server.DefaultFillQueueWait.String()))
	if err != nil {
		return cfg, level, fmt.Errorf("EDGE_FILL_QUEUE_WAIT: %w", err)
	}
	fs.DurationVar(&cfg.FillQueueWait, "fill-queue-wait", fillWait, "when all of the namespace's concurrent fills (the policy's max_concurrent_fills) are busy, how long a cold blob waits for one before its clients get 429 with Retry-After; 0: wait as long as the fill timeout")
	fs.Var(&internalRedirects, "allow-internal-redirects", "let upstream `PREFIX` redirect (or send its token realm) to addresses more internal than its own: loopback, link-local (169.254.0.0/16, fe80::/10) or private ranges; by default a redirect may not go to a more internal address class than the upstream itself (repeatable; EDGE_ALLOW_INTERNAL_REDIRECTS: comma-separated)")
	logLevel := fs.String("log-level", env("log-level", "info"), "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return cfg, level, err
	}
	if fs.NArg() > 0 {
		return cfg, level, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if len(ups) == 0 {
		if v := env("upstream", ""); v != "" {
			ups = strings.Split(v, ",")
		}
	}
	cfg.Upstreams = ups
	if len(internalRedirects) == 0 {
		if v := env("allow-internal-redirects", ""); v != "" {
			internalRedirects = strings.Split(v, ",")
		}
	}
	cfg.InternalRedirects = internalRedirects
	proxySource := ""
	if len(proxies) == 0 {
		if v := env("proxy", ""); strings.TrimSpace(v) != "" {
			proxies, proxySource = listFlag{v}, "EDGE_PROXY: "
		}
	}
	cfg.Proxy = proxies
	// Parsed here too, so a bad node is a usage error at start-up. The
	// message names the flag and the entry, never the value.
	if _, err := cfg.ProxyNodes(); err != nil {
		return cfg, level, fmt.Errorf("%s%w", proxySource, err)
	}
	if cfg.ProxyFirstByteTimeout <= 0 {
		return cfg, level, fmt.Errorf("--proxy-first-byte-timeout must be positive")
	}
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return cfg, level, fmt.Errorf("--log-level: %w", err)
	}
	if cfg.TagTTL < 0 {
		return cfg, level, fmt.Errorf("--tag-ttl must not be negative")
	}
	if cfg.ShutdownDelay < 0 || cfg.ShutdownTimeout < 0 {
		return cfg, level, fmt.Errorf("--shutdown-delay and --shutdown-timeout must not be negative")
	}
	if cfg.MaxConnections < 0 {
		return cfg, level, fmt.Errorf("--max-connections must not be negative")
	}
	if cfg.Limits.RPS < 0 || cfg.Limits.Burst < 0 || cfg.FillQueueWait < 0 {
		return cfg, level, fmt.Errorf("--max-upstream-rps, --upstream-burst and --fill-queue-wait must not be negative")
	}
	if cfg.StatsInterval <= 0 {
		return cfg, level, fmt.Errorf("--stats-interval must be positive")
	}
	cfg.Version = version()
	return cfg, level, nil
}
