package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/server"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/flagenv"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/proxydial"
)

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

// parseFlags reads flags, with EDGE_<FLAG> environment variables (from
// environ) under them (internal/flagenv); usage and errors of -h go to
// out. The Result names the variables that match no flag, for a warning
// once the logger exists.
func parseFlags(args, environ []string, out io.Writer) (server.Config, slog.Level, flagenv.Result, error) {
	var cfg server.Config
	var level slog.Level
	fs := flag.NewFlagSet("edge", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: edge [flags]

A pull-through OCI registry cache. Every flag can also be set as an
environment variable EDGE_<FLAG> (upper case, '-' as '_', e.g. EDGE_TAG_TTL);
a flag on the command line wins over the variable, the variable over the
default. A list variable replaces the default: EDGE_UPSTREAM and
EDGE_ALLOW_INTERNAL_REDIRECTS are comma-separated, EDGE_PROXY is one value.
A bad value in a variable stops the edge; an EDGE_ variable that names no
flag is logged as a warning.

Flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Listen, "listen", ":5000", "address of the registry API (`ADDR`)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "serve the registry API (and its probes) over TLS with this certificate (`FILE`, PEM; re-read when it changes); default: plain HTTP, which containerd accepts only on loopback")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "private key of --tls-cert (`FILE`, PEM)")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", "", "separate address for Prometheus /metrics (`ADDR`); empty: /metrics on --listen")
	fs.StringVar(&cfg.Storage, "storage", "./data", "cache storage: a directory, s3://BUCKET[/PREFIX], or control-plane: the shared storage brokered by the control plane (the edge holds no storage keys: it reads each object by a short-lived presigned URL after the control plane checked its namespace's access, and writes through the control plane, which verifies the digest); needs --control-plane, and the edge is not ready until a configuration with storage.brokered arrives (`PATH|URL|control-plane`)")
	fs.StringVar(&cfg.S3Endpoint, "s3-endpoint", "", "S3 endpoint for MinIO and other S3-compatible servers (`URL`); empty: AWS")
	fs.StringVar(&cfg.S3Region, "s3-region", "", "S3 region (default from AWS_REGION, else us-east-1)")
	fs.BoolVar(&cfg.S3PathStyle, "s3-path-style", false, "address the bucket as ENDPOINT/BUCKET (MinIO, versitygw); S3 credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, shared files, IAM roles)")
	fs.Var(flagenv.NewList(&cfg.Upstreams, ","), "upstream", "add or override an upstream as `PREFIX=URL` (repeatable; EDGE_UPSTREAM: comma-separated; http:// allowed). Defaults: dockerhub=https://registry-1.docker.io, ghcr=https://ghcr.io, quay (alias quayio)=https://quay.io, k8s=https://registry.k8s.io")
	fs.StringVar(&cfg.CredentialsFile, "upstream-credentials", "", "JSON file of upstream credentials: {\"PREFIX\": {\"username\": \"…\", \"password\": \"…\"}} (`FILE`)")
	fs.StringVar(&cfg.Namespace, "namespace", "default", "namespace whose tag index this edge keeps (`NAME`)")
	fs.DurationVar(&cfg.TagTTL, "tag-ttl", 5*time.Minute, "how long a tag is trusted before it is revalidated upstream with HEAD")
	fs.StringVar(&cfg.SpoolDir, "spool-dir", "", "directory for in-flight upstream transfers (default: <storage>/_spool, or the temp dir for S3 and control-plane storage)")
	fs.StringVar(&cfg.ControlPlane, "control-plane", "", "gRPC address of the control plane (`ADDR`, e.g. 127.0.0.1:9090). Its snapshots replace --upstream, --upstream-credentials and the policy. The edge fails closed: until this namespace's configuration is applied (from the control plane, or persisted in --state-dir by an earlier run) /readyz and every registry request answer 503. Empty: flags only")
	fs.StringVar(&cfg.ControlPlaneTokenFile, "control-plane-token-file", "", "bearer token for the control plane, e.g. a projected ServiceAccount token (`FILE`); read again on every reconnect")
	fs.StringVar(&cfg.ControlPlaneCAFile, "control-plane-ca-file", "", "dial --control-plane over TLS, trusting the CA certificates in this PEM file and checking that the certificate names the host of --control-plane (`FILE`; read again on every reconnect, so a rotated CA is picked up). In a cluster the controller mounts the ConfigMap selfhost-controlplane-ca here. Empty: plaintext, for loopback")
	fs.StringVar(&cfg.StateDir, "state-dir", "", "directory for the last good control-plane configuration (`DIR`); the file holds credentials and is written mode 0600 (default: <storage>/_state/<namespace>, or ./edge-state/<namespace> for S3 and control-plane storage, so edges of different namespaces on one storage never share it)")
	fs.StringVar(&cfg.PodName, "pod-name", "", "pod name this edge reports to the control plane (`NAME`; default: the host name)")
	fs.StringVar(&cfg.AdvertiseAddress, "advertise-address", "", "address clients pull from, reported to the control plane (`ADDR`; default: the bound --listen address)")
	fs.DurationVar(&cfg.StatsInterval, "stats-interval", 10*time.Second, "how often cache counters are reported to the control plane")
	fs.Var(flagenv.NewList(&cfg.Proxy, ""), "proxy", "dial every upstream through a Clash node (`NODE`; repeatable, tried in order with failover): a share link (ss://, vmess://, trojan://, vless://, socks5://user:pass@host:port, http://…), a Clash node as YAML/JSON, a YAML list or Clash file with proxies:, or @FILE holding any of these (keeps passwords out of the process list). Used until a control plane sends its own selection. EDGE_PROXY holds one such value (several links separated by newlines)")
	fs.DurationVar(&cfg.ProxyFirstByteTimeout, "proxy-first-byte-timeout", proxydial.DefaultFirstByteTimeout, "a connection through a proxy node that gets no byte back this long after its first write moves to the next node (a silent proxy: wrong password, unreachable upstream); must exceed the upstream's time to answer")
	fs.DurationVar(&cfg.StorageGrantTTL, "storage-grant-ttl", time.Minute, "with --storage=control-plane: how long the control plane's grant of one object (its presigned URL) is reused before it is asked again; at most 1m. Access the control plane withdraws (a revoked credential after --proof-ttl) stops within this")
	fs.DurationVar(&cfg.ShutdownDelay, "shutdown-delay", server.DefaultShutdownDelay, "after SIGTERM, /readyz answers 503 at once but requests are still served this long, while the endpoint's removal reaches kube-proxy and load balancers")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", server.DefaultShutdownTimeout, "after the drain delay the listener closes and in-flight requests (blob transfers) get this long to finish; the pod's terminationGracePeriodSeconds must exceed --shutdown-delay plus this")
	fs.IntVar(&cfg.MaxConnections, "max-connections", server.DefaultMaxConnections, "most open connections on --listen; further ones wait in the accept queue (0: no cap)")
	fs.IntVar(&cfg.Limits.RPS, "max-upstream-rps", server.DefaultMaxUpstreamRPS, "upstream requests per second of this edge's namespace (manifest GET/HEAD, blob fills and HEADs, tag lists, tag revalidations); beyond it and the burst, pulls that need the upstream get 429 TOOMANYREQUESTS with Retry-After, while cached content is always served. The control plane's policy (max_upstream_requests_per_second) overrides it. 0: unlimited")
	fs.IntVar(&cfg.Limits.Burst, "upstream-burst", server.DefaultUpstreamBurst, "upstream requests that may start at once above --max-upstream-rps (the policy's upstream_burst overrides it)")
	fs.DurationVar(&cfg.FillQueueWait, "fill-queue-wait", server.DefaultFillQueueWait, "when all of the namespace's concurrent fills (the policy's max_concurrent_fills) are busy, how long a cold blob waits for one before its clients get 429 with Retry-After; 0: wait as long as the fill timeout")
	fs.Var(flagenv.NewList(&cfg.InternalRedirects, ","), "allow-internal-redirects", "let upstream `PREFIX` redirect (or send its token realm) to addresses more internal than its own: loopback, link-local (169.254.0.0/16, fe80::/10) or private ranges; by default a redirect may not go to a more internal address class than the upstream itself (repeatable; EDGE_ALLOW_INTERNAL_REDIRECTS: comma-separated)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	res, err := flagenv.Parse(fs, args, environ, flagenv.Options{Prefix: "EDGE_"})
	if err != nil {
		return cfg, level, res, err
	}
	if fs.NArg() > 0 {
		return cfg, level, res, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	proxySource := ""
	if v, ok := res.FromEnv["proxy"]; ok {
		proxySource = v + ": "
	}
	// Parsed here too, so a bad node is a usage error at start-up. The
	// message names the flag and the entry, never the value.
	if _, err := cfg.ProxyNodes(); err != nil {
		return cfg, level, res, fmt.Errorf("%s%w", proxySource, err)
	}
	if cfg.ProxyFirstByteTimeout <= 0 {
		return cfg, level, res, fmt.Errorf("--proxy-first-byte-timeout must be positive")
	}
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return cfg, level, res, fmt.Errorf("--log-level: %w", err)
	}
	if cfg.TagTTL < 0 {
		return cfg, level, res, fmt.Errorf("--tag-ttl must not be negative")
	}
	if cfg.ShutdownDelay < 0 || cfg.ShutdownTimeout < 0 {
		return cfg, level, res, fmt.Errorf("--shutdown-delay and --shutdown-timeout must not be negative")
	}
	if cfg.MaxConnections < 0 {
		return cfg, level, res, fmt.Errorf("--max-connections must not be negative")
	}
	if cfg.Limits.RPS < 0 || cfg.Limits.Burst < 0 || cfg.FillQueueWait < 0 {
		return cfg, level, res, fmt.Errorf("--max-upstream-rps, --upstream-burst and --fill-queue-wait must not be negative")
	}
	if cfg.StatsInterval <= 0 {
		return cfg, level, res, fmt.Errorf("--stats-interval must be positive")
	}
	cfg.Version = version()
	return cfg, level, res, nil
}
