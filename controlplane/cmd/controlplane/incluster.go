package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/auth"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config/configfile"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config/configmapstate"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/controller"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/grpcserver"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/incluster"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/nodeaccess"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/probes"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/webhookconfig"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubeclient"
)

// runInCluster wires the in-cluster parts: Kubernetes client, ConfigMap
// state, TokenReview authentication, and the incluster runtime next to the
// gRPC server.
func runInCluster(ctx context.Context, f flags, opts grpcserver.Options, log *slog.Logger) error {
	c := f.cluster
	// client-go logs (leader election, informers) through klog: route them
	// into the same structured log.
	klog.SetSlogLogger(log.With("component", "client-go"))
	client, err := kubeclient.New(kubeclient.Options{Kubeconfig: c.kubeconfig, UserAgent: "k8s-selfhost-repo-controlplane",
		QPS: float32(c.kubeQPS), Burst: c.kubeBurst})
	if err != nil {
		return err
	}
	state, err := configmapstate.New(client, configmapstate.Options{Namespace: c.namespace, Log: log.With("component", "state")})
	if err != nil {
		return err
	}
	src := configfile.New(f.config, "", log.With("component", "config"), configfile.WithStateStore(state), configfile.InCluster())
	opts.Source = src
	opts.Authenticator, err = auth.NewTokenReview(client, auth.TokenReviewOptions{
		EdgeAudience: c.edgeAudience,
		AdminGroups:  c.adminGroups,
		Log:          log.With("component", "auth"),
	})
	if err != nil {
		return fmt.Errorf("token review: %w", err)
	}
	tmpl, err := edgeTemplate(c)
	if err != nil {
		return err
	}
	wo, err := webhookOptions(c)
	if err != nil {
		return err
	}
	var keeper *webhookconfig.Keeper
	var caBundle *controller.CABundle
	if c.grpcTLS {
		// One CA, one Secret, one serving certificate for the webhook and
		// the gRPC port; the edges get the CA bundle in a ConfigMap.
		caBundle = &controller.CABundle{}
		if keeper, err = grpcKeeper(client, c, wo, caBundle, log); err != nil {
			return err
		}
		opts.GRPCOptions = append(opts.GRPCOptions, grpc.Creds(credentials.NewTLS(keeper.TLSConfig())))
		tmpl.ControlPlaneCA = true
	} else {
		log.Warn("--grpc-tls=off: edges' configuration streams, with their credentials, are plaintext")
	}
	// The admin API is built before the runtime that owns the node-access
	// check; it answers from it once it exists.
	nodes := &nodeaccess.Late{}
	opts.NodeAccess = nodes
	p := probes.New(opts.Metrics.Handler(), log.With("component", "probes"))
	return serve(ctx, f, opts, p, func(ctx context.Context, srv *grpcserver.Server) []func() error {
		rt, err := incluster.New(incluster.Options{
			Client: client, ReleaseNamespace: c.namespace, PodName: c.podName, Store: srv.Store(),
			Edge: tmpl, Workers: c.workers, Mirror: c.mirror, MirrorAuth: c.mirrorAuth, MirrorTLSSecret: c.mirrorTLSSecret,
			NodeAccess:    nodeaccess.Mode(c.nodeAccess),
			LeaseDuration: c.leaseDuration, RenewDeadline: c.renewDeadline, RetryPeriod: c.retryPeriod,
			WebhookDisabled: c.webhookDisabled, WebhookListen: c.webhookListen, Webhook: wo,
			Keeper: keeper, CABundle: caBundle, Metrics: opts.Metrics,
			Logger: log,
		})
		if err != nil {
			return []func() error{func() error { return err }}
		}
		nodes.Set(rt.NodeAccess())
		p.AddCheck("kubernetes", rt.Ready)
		return []func() error{
			func() error { return rt.Run(ctx) },
			func() error {
				// Admin changes made through another replica.
				return src.Watch(ctx, func(ctx context.Context, apply func(*config.State) bool) {
					if _, err := srv.Store().UpdateRuntime(ctx, "runtime state from another replica", apply); err != nil {
						log.Error("runtime state from another replica not applied", "err", err)
						return
					}
					// A new Clash mode or pinned node changes the selection.
					if mgr := srv.Clash(); mgr != nil {
						mgr.Reselect(ctx, "runtime state from another replica")
					}
				})
			},
		}
	})
}

// grpcKeeper builds the keeper of the TLS Secret for the webhook (unless
// disabled) and the gRPC port: its serving certificate also names the
// gRPC Service (grpcHosts), and every CA bundle it loads goes to ca.
func grpcKeeper(client kubernetes.Interface, c clusterFlags, wo webhookconfig.Options, ca *controller.CABundle, log *slog.Logger) (*webhookconfig.Keeper, error) {
	hosts, err := grpcHosts(c)
	if err != nil {
		return nil, err
	}
	wo.Namespace, wo.Logger = c.namespace, log
	wo.ExtraHosts = hosts
	wo.ConfigurationDisabled = c.webhookDisabled
	wo.OnCABundle = ca.Set
	k, err := webhookconfig.New(client, wo)
	if err != nil {
		return nil, fmt.Errorf("gRPC TLS: %w", err)
	}
	return k, nil
}

// grpcHosts are the gRPC certificate's names: the Service's in-cluster
// names and the host of --edge-control-plane (the name edges verify).
func grpcHosts(c clusterFlags) ([]string, error) {
	host, _, err := net.SplitHostPort(c.edgeControlPlane)
	if err != nil {
		return nil, fmt.Errorf("--edge-control-plane %q: want HOST:PORT", c.edgeControlPlane)
	}
	svc := c.grpcService
	if svc == "" && net.ParseIP(host) == nil {
		svc, _, _ = strings.Cut(host, ".")
	}
	hosts := []string{host}
	if svc != "" {
		ns := svc + "." + c.namespace
		hosts = append(hosts, svc, ns, ns+".svc", ns+".svc."+strings.TrimSuffix(c.clusterDomain, "."))
	}
	return hosts, nil
}

func edgeTemplate(c clusterFlags) (controller.EdgeTemplate, error) {
	res, err := parseResources(c.edgeResources)
	if err != nil {
		return controller.EdgeTemplate{}, fmt.Errorf("--edge-resources: %w", err)
	}
	t := controller.EdgeTemplate{
		Image:               c.edgeImage,
		ImagePullPolicy:     corev1.PullPolicy(c.edgePullPolicy),
		Resources:           res,
		Replicas:            int32(c.edgeReplicas),
		ControlPlaneAddress: c.edgeControlPlane,
		TokenAudience:       c.edgeAudience,
		ExtraArgs:           c.edgeArgs,
	}
	if err := t.Validate(); err != nil {
		return t, fmt.Errorf("edge template: %w", err)
	}
	return t, nil
}

// parseResources reads "requests.cpu=50m,limits.memory=256Mi".
func parseResources(s string) (corev1.ResourceRequirements, error) {
	var r corev1.ResourceRequirements
	for _, item := range splitList(s) {
		key, val, ok := strings.Cut(item, "=")
		kind, name, ok2 := strings.Cut(key, ".")
		if !ok || !ok2 || (kind != "requests" && kind != "limits") || (name != "cpu" && name != "memory") {
			return r, fmt.Errorf("%q: want requests.cpu=…, requests.memory=…, limits.cpu=… or limits.memory=…", item)
		}
		q, err := resource.ParseQuantity(val)
		if err != nil {
			return r, fmt.Errorf("%q: %w", item, err)
		}
		list := &r.Requests
		if kind == "limits" {
			list = &r.Limits
		}
		if *list == nil {
			*list = corev1.ResourceList{}
		}
		(*list)[corev1.ResourceName(name)] = q
	}
	return r, nil
}

func webhookOptions(c clusterFlags) (webhookconfig.Options, error) {
	o := webhookconfig.Options{Hosts: c.webhookHosts, Interval: c.tlsSyncInterval, CAPropagation: c.caPropagation}
	if c.webhookDisabled {
		return o, nil
	}
	if c.webhookURL != "" {
		u, err := url.Parse(c.webhookURL)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return o, errors.New("--webhook-url: want https://HOST:PORT/PATH")
		}
		o.URL = c.webhookURL
		return o, nil
	}
	name, port, err := net.SplitHostPort(c.webhookService)
	if err != nil {
		return o, fmt.Errorf("--webhook-service %q: want NAME:PORT", c.webhookService)
	}
	p, err := strconv.ParseInt(port, 10, 32)
	if err != nil || p < 1 || p > 65535 {
		return o, fmt.Errorf("--webhook-service %q: port must be 1-65535", c.webhookService)
	}
	o.Service = &webhookconfig.Service{Name: name, Port: int32(p)}
	return o, nil
}
