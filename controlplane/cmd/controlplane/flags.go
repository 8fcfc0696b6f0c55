package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/flagenv"
)

// envPrefix: every flag --some-name can also be set as CONTROLPLANE_SOME_NAME.
const envPrefix = "CONTROLPLANE_"

// DefaultEdgeAudience is the audience of the edges' projected
// ServiceAccount tokens.
const DefaultEdgeAudience = "k8s-selfhost-repo-controlplane"

// flags are the command line, after environment defaults.
type flags struct {
	standalone bool
	config     string
	grpcListen string
	stateDir   string
	debounce   time.Duration
	proofTTL   time.Duration
	logLevel   slog.Level
	tlsCert    string
	tlsKey     string
	httpListen string // "" after parsing: no HTTP port
	// maxGRPCConns and maxGRPCStreams bound what clients, authenticated
	// or not, can make the gRPC server hold.
	maxGRPCConns     int
	maxGRPCStreams   int
	maxCallerStreams int
	// upstreamRPS and upstreamBurst are the namespaces' default upstream
	// rate limits (0: the edges' own defaults).
	upstreamRPS   int
	upstreamBurst int
	// shutdownDelay is how long the servers keep serving after SIGTERM
	// while /readyz reports not ready.
	shutdownDelay time.Duration
	cluster       clusterFlags
}

// DefaultCAPropagation is how long after a CA rotation the previous CA's
// certificate is still presented: the leader learns of the new CA within
// --tls-sync-interval and kubelet updates mounted ConfigMaps within about
// a minute more.
const DefaultCAPropagation = 3 * time.Minute

// DefaultShutdownDelay is the in-cluster drain after SIGTERM: long enough
// for the endpoint removal to reach kube-proxy and the apiserver's webhook
// client.
const DefaultShutdownDelay = 5 * time.Second

// DefaultHTTPListen is the in-cluster address of /healthz, /readyz and
// /metrics.
const DefaultHTTPListen = ":9091"

// clusterFlags are the in-cluster mode's flags (without --standalone).
type clusterFlags struct {
	kubeconfig       string
	kubeQPS          int
	kubeBurst        int
	namespace        string
	podName          string
	adminGroups      []string
	edgeAudience     string
	edgeImage        string
	edgePullPolicy   string
	edgeResources    string
	edgeReplicas     int
	edgeArgs         []string
	edgeControlPlane string
	mirror           bool
	mirrorAuth       bool
	mirrorTLSSecret  string
	nodeAccess       string
	grpcTLS          bool
	grpcService      string
	clusterDomain    string
	tlsSyncInterval  time.Duration
	caPropagation    time.Duration
	workers          int
	leaseDuration    time.Duration
	renewDeadline    time.Duration
	retryPeriod      time.Duration
	webhookDisabled  bool
	webhookListen    string
	webhookService   string
	webhookURL       string
	webhookHosts     []string
}

// rawFlags are the server flags that parseFlags checks and converts.
type rawFlags struct{ level, grpcTLS *string }

// newServerFlagSet defines the server's flags on a new flag set, writing
// into f; usage goes to out.
func newServerFlagSet(f *flags, out io.Writer) (*flag.FlagSet, rawFlags) {
	var raw rawFlags
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: controlplane --standalone --config FILE [flags]
       controlplane --namespace NS --edge-image IMAGE --edge-control-plane ADDR [flags]   (in a cluster)
       controlplane cleanup --namespace NS   (uninstall: removes what the in-cluster mode created; cleanup --help)

The k8s-selfhost-repo control plane: holds the upstream registries and each
namespace's policy, pushes them to the edges over gRPC
(selfhost.v1.ConfigDiscoveryService) and serves the admin API
(selfhost.v1.AdminService) with server reflection and grpc.health.v1 on.
Only health works without a token; every other call, reflection (grpcurl
list/describe) included, needs "authorization: Bearer <token>" of an admin
or an edge. See docs/control-protocol.md.

Without --standalone it runs in a Kubernetes cluster (docs/kubernetes.md):
it creates an edge in every namespace labelled
k8s-selfhost-repo.io/cache=enabled (leader-elected), authenticates edges
and admins with TokenReview (admins: --admin-groups or RBAC "use" on
adminapi.k8s-selfhost-repo.io), keeps admin changes in a ConfigMap, and
serves the image-rewriting admission webhook over HTTPS. --config is
optional there (upstreams, clash); adminTokens and namespaces are refused.

Every flag can also be set as an environment variable CONTROLPLANE_<FLAG>
(upper case, '-' as '_', e.g. CONTROLPLANE_GRPC_LISTEN); a flag on the
command line wins over the variable, the variable over the default. A list
variable (CONTROLPLANE_ADMIN_GROUPS, _EDGE_ARGS, _WEBHOOK_HOSTS) is
comma-separated and replaces the default. A bad value in a variable stops
the control plane; a CONTROLPLANE_ variable that names no flag is logged as
a warning.

Flags:
`)
		fs.PrintDefaults()
	}
	fs.BoolVar(&f.standalone, "standalone", false, "run without Kubernetes: configuration, tokens and state come from --config")
	fs.StringVar(&f.config, "config", "", "YAML configuration: upstreams, clash, and (standalone only) adminTokens and namespaces (`FILE`; see docs/control-protocol.md and docs/clash.md); required with --standalone")
	fs.StringVar(&f.grpcListen, "grpc-listen", ":9090", "address of the gRPC server: edge streams and admin API (`ADDR`)")
	fs.StringVar(&f.stateDir, "state-dir", "", "standalone: directory of controlplane-state.json, where admin API changes persist (`DIR`; default: the config file's directory)")
	fs.DurationVar(&f.debounce, "debounce", 50*time.Millisecond, "quiet period after a change before it is pushed to edges; 0 pushes at once")
	fs.DurationVar(&f.proofTTL, "proof-ttl", 0, "how long a proof of upstream access (an upstream HEAD of a manifest, anonymous or with a namespace's credentials) lets the storage broker serve that namespace shared content before it asks again; a revoked credential stops serving after it (default 10m)")
	fs.IntVar(&f.maxGRPCConns, "max-grpc-connections", 0, "open gRPC connections (edges, admin clients, anyone reaching the port); more are closed as soon as they are accepted (default 1024)")
	fs.IntVar(&f.maxGRPCStreams, "max-grpc-streams", 0, "concurrent streams and calls per gRPC connection (an edge needs 1 config stream and a few calls); clients queue beyond it (default 64)")
	fs.IntVar(&f.maxCallerStreams, "max-grpc-streams-per-caller", 0, "open gRPC streams of one caller across its connections: one namespace's edges, one admin, or all callers without a token together (health); more are refused with ResourceExhausted (default 256)")
	fs.IntVar(&f.upstreamRPS, "namespace-max-upstream-rps", 0, "default of every namespace's upstream requests per second through its edge (manifests, blob fills, tag lists, revalidations; beyond it pulls of uncached content get 429 with Retry-After, cached content is never limited); a namespace's maxUpstreamRequestsPerSecond (standalone YAML) wins; 0: the edge's --max-upstream-rps")
	fs.IntVar(&f.upstreamBurst, "namespace-upstream-burst", 0, "default of every namespace's upstream request burst above the rate; a namespace's upstreamBurst wins; 0: the edge's --upstream-burst")
	raw.level = fs.String("log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "serve gRPC over TLS with this certificate (`FILE`, PEM); default: plaintext, for loopback")
	fs.StringVar(&f.tlsKey, "tls-key", "", "private key for --tls-cert (`FILE`, PEM)")
	fs.StringVar(&f.httpListen, "http-listen", "", "plain-HTTP address of /healthz, /readyz and /metrics (`ADDR`; default: "+DefaultHTTPListen+" in-cluster, none standalone; off: none)")
	fs.DurationVar(&f.shutdownDelay, "shutdown-delay", -1, "after SIGTERM, keep serving gRPC and the webhook this long with /readyz answering 503, so the pod leaves the Service's endpoints before it stops answering (the apiserver would otherwise send webhook calls to a gone pod and admit pods untouched); default: "+DefaultShutdownDelay.String()+" in-cluster, 0 standalone")
	raw.grpcTLS = fs.String("grpc-tls", "on", "in-cluster mode: on serves gRPC over TLS with a certificate of the control plane's CA (the webhook's, in its TLS Secret) and gives each edge the CA in the ConfigMap selfhost-controlplane-ca; off serves plaintext (tests only: the stream carries credentials)")

	c := &f.cluster
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "in-cluster mode: kubeconfig `FILE`; default: the pod's ServiceAccount")
	fs.IntVar(&c.kubeQPS, "kube-api-qps", 50, "in-cluster mode: sustained requests per second to the apiserver, per API group (client-go's default of 5 makes reconciling 1000 namespaces take 10 minutes)")
	fs.IntVar(&c.kubeBurst, "kube-api-burst", 100, "in-cluster mode: request burst to the apiserver")
	fs.StringVar(&c.namespace, "namespace", "", "in-cluster mode: the release namespace (Lease, state ConfigMap, webhook Secret; never injected) (`NS`, required)")
	fs.StringVar(&c.podName, "pod-name", "", "in-cluster mode: this replica's pod name, for the leader-election identity (default: host name)")
	fs.Var(flagenv.NewList(&c.adminGroups, ",").SplitArgs(), "admin-groups", "in-cluster mode: Kubernetes groups whose members may use the admin API without an RBAC check (`G1,G2`)")
	fs.StringVar(&c.edgeAudience, "edge-audience", DefaultEdgeAudience, "in-cluster mode: audience of the edges' projected ServiceAccount tokens")
	fs.StringVar(&c.edgeImage, "edge-image", "", "in-cluster mode: image of every edge Deployment (`IMAGE`, required)")
	fs.StringVar(&c.edgePullPolicy, "edge-image-pull-policy", "IfNotPresent", "in-cluster mode: Always, IfNotPresent or Never")
	fs.StringVar(&c.edgeResources, "edge-resources", "requests.cpu=50m,requests.memory=64Mi,limits.memory=256Mi", "in-cluster mode: the edge container's resources (`requests.cpu=…,limits.memory=…`)")
	fs.BoolVar(&c.mirror, "mirror", false, "in-cluster mode: give the release namespace an edge of its own without the opt-in label, a cluster-wide mirror for clients the webhook does not reach (Docker registry-mirrors, prefixed pulls, containerd hosts.toml) behind its NodePort; a tenant like any other, it never serves another namespace's private content (docs/kubernetes.md)")
	fs.BoolVar(&c.mirrorAuth, "mirror-auth", true, "in-cluster mode, with --mirror: clients need the mirror's pull token (Secret selfhost-edge-pull in the release namespace, user \"selfhost\"); false serves anyone who reaches the NodePort — only on a trusted network")
	fs.StringVar(&c.nodeAccess, "node-access", "nodePort", "in-cluster mode: how nodes reach 127.0.0.1:<nodePort> (the chart's nodeAccess; docs/kubernetes.md, \"Node access\"): nodePort trusts the Service proxy; forwarder and auto rewrite images only while every Ready, schedulable node runs a ready selfhost-forwarder pod in the release namespace")
	fs.StringVar(&c.mirrorTLSSecret, "mirror-tls-secret", "", "in-cluster mode, with --mirror: serve the mirror over TLS with this kubernetes.io/tls Secret of the release namespace (`NAME`; tls.crt, tls.key, re-read when renewed), so clients need no insecure-registries entry; default: plain HTTP")
	fs.IntVar(&c.edgeReplicas, "edge-replicas", 2, "in-cluster mode: replicas of every edge Deployment (spread across nodes, one PodDisruptionBudget per namespace lets drains take one at a time)")
	fs.Var(flagenv.NewList(&c.edgeArgs, ",").SplitArgs(), "edge-args", "in-cluster mode: extra edge arguments, e.g. storage flags (`ARG,ARG`; repeatable)")
	fs.StringVar(&c.edgeControlPlane, "edge-control-plane", "", "in-cluster mode: the gRPC address edges dial, e.g. selfhost-controlplane.selfhost-system.svc:9090 (`ADDR`, required)")
	fs.StringVar(&c.grpcService, "grpc-service", "", "in-cluster mode: the control plane's Service in --namespace; the gRPC certificate names <svc>, <svc>.<ns>, <svc>.<ns>.svc and <svc>.<ns>.svc.<cluster-domain>, and the host of --edge-control-plane (`NAME`; default: the first label of that host)")
	fs.DurationVar(&c.tlsSyncInterval, "tls-sync-interval", time.Minute, "in-cluster mode: how often the TLS Secret (CA and serving certificate of the webhook and gRPC) is re-read, rotated when due and the webhook configuration repaired; another replica's rotation is picked up within this")
	fs.DurationVar(&c.caPropagation, "tls-ca-propagation", DefaultCAPropagation, "in-cluster mode: after a CA rotation, how long a replica keeps presenting its certificate of the previous CA, so that the edges' mounted CA ConfigMaps (kubelet syncs them within about a minute) and the apiservers' caBundle trust the new CA first")
	fs.StringVar(&c.clusterDomain, "cluster-domain", "cluster.local", "in-cluster mode: the cluster's DNS domain, for the gRPC certificate's names")
	fs.IntVar(&c.workers, "workers", 4, "in-cluster mode: namespaces reconciled in parallel")
	fs.DurationVar(&c.leaseDuration, "leader-lease-duration", 15*time.Second, "in-cluster mode: leader-election lease duration")
	fs.DurationVar(&c.renewDeadline, "leader-renew-deadline", 10*time.Second, "in-cluster mode: how long the leader keeps trying to renew before it stops leading")
	fs.DurationVar(&c.retryPeriod, "leader-retry-period", 2*time.Second, "in-cluster mode: interval of leader-election attempts")
	fs.BoolVar(&c.webhookDisabled, "webhook-disabled", false, "in-cluster mode: do not serve the injector webhook (pods keep their images)")
	fs.StringVar(&c.webhookListen, "webhook-listen", ":8443", "in-cluster mode: HTTPS address of the injector webhook (`ADDR`)")
	fs.StringVar(&c.webhookService, "webhook-service", "", "in-cluster mode: the Service the apiserver calls the webhook through (`NAME:PORT` in --namespace)")
	fs.StringVar(&c.webhookURL, "webhook-url", "", "in-cluster mode: instead of --webhook-service, the URL the apiserver calls (`https://HOST:PORT/mutate-pods`; a control plane outside the cluster)")
	fs.Var(flagenv.NewList(&c.webhookHosts, ",").SplitArgs(), "webhook-hosts", "in-cluster mode: the webhook certificate's DNS names and IPs (`H1,H2`; default: from --webhook-service or --webhook-url)")
	return fs, raw
}

// parseFlags reads args, with CONTROLPLANE_<FLAG> environment variables
// (from environ, as os.Environ gives them) under them (internal/flagenv).
// It returns flag.ErrHelp after printing the usage for -h/--help to out.
// The Result names the variables that match no flag, for a warning once
// the logger exists.
func parseFlags(args, environ []string, out io.Writer) (flags, flagenv.Result, error) {
	var f flags
	fs, raw := newServerFlagSet(&f, out)
	res, err := flagenv.Parse(fs, args, environ, serverEnv())
	if err != nil {
		return f, res, err
	}
	level, grpcTLS := raw.level, raw.grpcTLS
	c := &f.cluster
	if fs.NArg() > 0 {
		return f, res, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := f.logLevel.UnmarshalText([]byte(*level)); err != nil {
		return f, res, fmt.Errorf("--log-level %q: want debug, info, warn or error", *level)
	}
	if f.proofTTL < 0 {
		return f, res, errors.New("--proof-ttl must not be negative")
	}
	if f.debounce < 0 {
		return f, res, errors.New("--debounce must not be negative")
	}
	switch {
	case f.maxGRPCConns < 0:
		return f, res, errors.New("--max-grpc-connections must not be negative")
	case f.maxGRPCStreams < 0 || f.maxGRPCStreams > math.MaxUint32:
		return f, res, errors.New("--max-grpc-streams must not be negative")
	case f.maxCallerStreams < 0:
		return f, res, errors.New("--max-grpc-streams-per-caller must not be negative")
	case f.upstreamRPS < 0 || f.upstreamRPS > math.MaxUint32 || f.upstreamBurst < 0 || f.upstreamBurst > math.MaxUint32:
		return f, res, errors.New("--namespace-max-upstream-rps and --namespace-upstream-burst must be 0 or positive")
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return f, res, errors.New("--tls-cert and --tls-key go together")
	}
	switch *grpcTLS {
	case "on":
		c.grpcTLS = true
	case "off":
	default:
		return f, res, fmt.Errorf("--grpc-tls %q: want on or off", *grpcTLS)
	}
	switch {
	case f.shutdownDelay < 0 && f.standalone:
		f.shutdownDelay = 0
	case f.shutdownDelay < 0:
		f.shutdownDelay = DefaultShutdownDelay
	}
	switch {
	case f.httpListen == "off":
		f.httpListen = ""
	case f.httpListen == "" && !f.standalone:
		f.httpListen = DefaultHTTPListen
	}
	if f.standalone {
		// Standalone serves plaintext on loopback unless --tls-cert.
		c.grpcTLS = false
		if f.config == "" {
			return f, res, errors.New("--config FILE is required with --standalone")
		}
		if c.mirror || c.mirrorTLSSecret != "" {
			return f, res, errors.New("--mirror and --mirror-tls-secret are for in-cluster mode; standalone, run an edge of its own (with --tls-cert) as the mirror")
		}
		return f, res, nil
	}
	switch {
	case c.namespace == "":
		return f, res, errors.New("--namespace is required in-cluster (or give --standalone)")
	case c.edgeImage == "":
		return f, res, errors.New("--edge-image is required in-cluster")
	case c.edgeControlPlane == "":
		return f, res, errors.New("--edge-control-plane is required in-cluster")
	case c.workers < 1:
		return f, res, errors.New("--workers must be at least 1")
	case c.tlsSyncInterval <= 0:
		return f, res, errors.New("--tls-sync-interval must be positive")
	case c.caPropagation <= 0:
		return f, res, errors.New("--tls-ca-propagation must be positive")
	case c.mirrorTLSSecret != "" && !c.mirror:
		return f, res, errors.New("--mirror-tls-secret needs --mirror")
	case c.nodeAccess != "nodePort" && c.nodeAccess != "forwarder" && c.nodeAccess != "auto":
		return f, res, fmt.Errorf("--node-access %q: want nodePort, forwarder or auto", c.nodeAccess)
	case c.edgeReplicas < 1 || c.edgeReplicas > 100:
		return f, res, errors.New("--edge-replicas must be 1-100")
	case c.kubeQPS < 1 || c.kubeBurst < c.kubeQPS:
		return f, res, errors.New("--kube-api-qps must be at least 1 and --kube-api-burst at least as large")
	case f.stateDir != "":
		return f, res, errors.New("--state-dir is for --standalone; in-cluster, admin changes live in a ConfigMap")
	case c.grpcTLS && f.tlsCert != "":
		return f, res, errors.New("--tls-cert is for --standalone or --grpc-tls=off; in-cluster, the gRPC certificate comes from the control plane's CA")
	case !c.webhookDisabled && (c.webhookService == "") == (c.webhookURL == ""):
		return f, res, errors.New("give exactly one of --webhook-service and --webhook-url (or --webhook-disabled)")
	}
	return f, res, nil
}

// serverEnv maps the server's flags to CONTROLPLANE_<FLAG> variables. The
// cleanup subcommand reads the same environment (the chart sets
// CONTROLPLANE_NAMESPACE for both), so its variables are known here.
func serverEnv() flagenv.Options {
	o := flagenv.Options{Prefix: envPrefix}
	fs, _ := newCleanupFlagSet(&cleanupFlags{}, io.Discard)
	o.Known = cleanupEnv().Vars(fs)
	return o
}

// splitList splits a comma-separated value into trimmed, non-empty items
// (--edge-resources).
func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
