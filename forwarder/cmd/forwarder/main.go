// Command forwarder makes 127.0.0.1:<nodePort> of every edge Service
// reach that edge on a node whose Service proxy does not forward loopback
// NodePorts (kube-proxy in IPVS mode, nftables mode without its gate,
// many eBPF replacements). It runs as the DaemonSet selfhost-forwarder in
// the release namespace with the host's network, listens on loopback only
// and copies each connection to the edge Service's ClusterIP
// (docs/kubernetes.md, "Node access"):
//
//	forwarder [--kubeconfig FILE] [--status-listen 127.0.0.1:9095]
//
// Every flag can also be set as FORWARDER_<FLAG> (internal/flagenv).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/forwarder/internal/agent"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/forwarder/internal/relay"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/flagenv"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubeclient"
)

// config is the parsed command line.
type config struct {
	kubeconfig    string
	host          netip.Addr
	statusListen  string
	probeWait     time.Duration
	reprobe       time.Duration
	dialTimeout   time.Duration
	shutdownGrace time.Duration
	level         slog.Level
}

// parseFlags reads the command line and FORWARDER_<FLAG> variables of
// environ through the project's one flag parser (internal/flagenv).
func parseFlags(args, environ []string, stderr io.Writer) (config, flagenv.Result, error) {
	var c config
	fs := flag.NewFlagSet("forwarder", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host := fs.String("listen-host", "127.0.0.1", "address of the node-port listeners: the loopback address the injector writes into pods")
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "kubeconfig file; empty: the pod's in-cluster ServiceAccount")
	fs.StringVar(&c.statusListen, "status-listen", "127.0.0.1:9095", "loopback address of /livez, /readyz and /status (kubelet's probes)")
	fs.DurationVar(&c.probeWait, "probe-wait", 2*time.Second, "how long a probe of a loopback node port waits for its connection at the forwarder's own listener")
	fs.DurationVar(&c.reprobe, "reprobe", 5*time.Minute, "how often every node port is probed again")
	fs.DurationVar(&c.dialTimeout, "dial-timeout", 10*time.Second, "timeout of a connection to an edge Service")
	fs.DurationVar(&c.shutdownGrace, "shutdown-grace", 20*time.Second, "on SIGTERM, how long open connections may finish before they are cut")
	fs.TextVar(&c.level, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	res, err := flagenv.Parse(fs, args, environ, flagenv.Options{Prefix: "FORWARDER_"})
	if err != nil {
		return c, res, err
	}
	if fs.NArg() > 0 {
		return c, res, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	a, err := netip.ParseAddr(*host)
	if err != nil {
		return c, res, fmt.Errorf("--listen-host: %w", err)
	}
	if !a.IsLoopback() {
		return c, res, fmt.Errorf("--listen-host %s: the forwarder listens on loopback only", a)
	}
	c.host = a
	if ap, err := netip.ParseAddrPort(c.statusListen); err != nil || !ap.Addr().IsLoopback() {
		return c, res, fmt.Errorf("--status-listen %q: want a loopback address:port", c.statusListen)
	}
	return c, res, nil
}

func main() {
	c, env, err := parseFlags(os.Args[1:], os.Environ(), os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "forwarder:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: c.level}))
	flagenv.LogUnknown(log, env)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c, log); err != nil {
		log.Error("forwarder stopped", "err", err)
		os.Exit(1)
	}
}

// run wires the relay, the agent and the status endpoint until ctx ends,
// then drains open connections for the grace period.
func run(ctx context.Context, c config, log *slog.Logger) error {
	client, err := kubeclient.New(kubeclient.Options{Kubeconfig: c.kubeconfig, UserAgent: "selfhost-forwarder"})
	if err != nil {
		return err
	}
	rl := relay.New(relay.Options{Host: c.host, DialTimeout: c.dialTimeout, Logger: log})
	a, err := agent.New(agent.Options{Client: client, Relay: rl, ProbeWait: c.probeWait, Reprobe: c.reprobe, Logger: log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.statusListen)
	if err != nil {
		return fmt.Errorf("status listener: %w", err)
	}
	srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("status endpoint", "err", err)
		}
	}()
	log.Info("forwarder started", "listen_host", c.host.String(), "status", c.statusListen)
	runErr := a.Run(ctx)
	grace, cancel := context.WithTimeout(context.Background(), c.shutdownGrace)
	defer cancel()
	log.Info("stopping; open connections may finish", "active", rl.Active(), "grace", c.shutdownGrace)
	closeErr := rl.Close(grace)
	_ = srv.Close()
	return errors.Join(runErr, closeErr)
}
