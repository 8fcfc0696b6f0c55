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
	"syscall"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/server"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/clashnode"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/flagenv"
)

func main() {
	// mihomo's process-wide set-up, before any proxy node is parsed.
	clashnode.Setup()
	cfg, level, env, err := parseFlags(os.Args[1:], os.Environ(), os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "edge:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	flagenv.LogUnknown(log, env)
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
