// Package incluster runs the control plane's Kubernetes side next to its
// gRPC server (package server): the informers, the namespace controller
// under leader election, the cluster view that feeds opted-in namespaces
// into the configuration store, the injector's HTTPS server, and the
// keeper of the TLS Secret (the CA and serving certificate of the webhook
// and of the gRPC port) and of the webhook configuration.
//
// Every replica serves gRPC and the webhook and keeps its view of the
// cluster; only the leader reconciles namespaces. cmd/controlplane builds
// the Options from its flags.
package incluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"golang.org/x/sync/errgroup"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/clusterview"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/controller"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/leader"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/metrics"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/nodeaccess"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/webhook"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/webhookconfig"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

// Options configure a Runtime. Client, ReleaseNamespace, Store, Edge and
// (unless WebhookDisabled) WebhookListen and Webhook are required.
type Options struct {
	Client kubernetes.Interface
	// ReleaseNamespace is where the control plane runs: its Lease, state
	// ConfigMap and webhook TLS Secret live there, and the injector never
	// touches its pods.
	ReleaseNamespace string
	// PodName starts the leader-election identity (default: host name).
	PodName string
	// Store is the configuration store the cluster view writes
	// namespaces into.
	Store clusterview.ConfigStore
	// Edge is every namespace's edge Deployment template.
	Edge controller.EdgeTemplate
	// Workers reconcile namespaces in parallel (default
	// controller.DefaultWorkers).
	Workers int
	// Mirror gives the release namespace an edge of its own, the
	// cluster-wide mirror (controller.WithMirror); MirrorAuth demands its
	// pull token.
	Mirror, MirrorAuth bool
	// MirrorTLSSecret, when set, is the kubernetes.io/tls Secret the
	// mirror serves TLS with (controller.WithMirrorTLS).
	MirrorTLSSecret string
	// LeaseDuration, RenewDeadline, RetryPeriod tune leader election
	// (defaults in package leader).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// Resync is the informers' resync period (0: none; drift is seen
	// through watch events).
	Resync time.Duration
	// WebhookDisabled turns the injector off (chart value
	// webhook.enabled=false): no HTTPS server, no webhook configuration.
	WebhookDisabled bool
	// WebhookListen is the HTTPS address of the injector (":8443").
	WebhookListen string
	// Webhook configures the TLS Secret and MutatingWebhookConfiguration;
	// its Namespace and Logger are filled in.
	Webhook webhookconfig.Options
	// Keeper, when set, is the keeper of the TLS Secret, built by the
	// caller because the gRPC server presents its certificate too (and
	// needs it before the runtime exists); Webhook is then unused. Run
	// runs it.
	Keeper *webhookconfig.Keeper
	// CABundle, when set, is the CA bundle the controller writes into
	// every opted-in namespace's CA ConfigMap (the keeper fills it).
	CABundle *controller.CABundle
	// NodeAccess is the chart value nodeAccess (--node-access): with
	// forwarder or auto the injector rewrites only while every
	// schedulable node has a ready forwarder (package nodeaccess); ""
	// means nodePort.
	NodeAccess nodeaccess.Mode
	// Metrics, when set, counts reconciles and admissions.
	Metrics *metrics.Metrics
	Logger  *slog.Logger
}

// Runtime is the Kubernetes side of one control-plane replica.
type Runtime struct {
	opts       Options
	log        *slog.Logger
	informers  *controller.Informers
	slices     informers.SharedInformerFactory
	nodeInfs   []informers.SharedInformerFactory // nodes, forwarder pods; none with nodePort
	gate       *nodeaccess.Gate
	controller *controller.Controller
	view       *clusterview.View
	elector    *leader.Elector
	keeper     *webhookconfig.Keeper // nil when the webhook is disabled
	handler    http.Handler          // nil when the webhook is disabled
	events     record.EventBroadcaster
	recorder   record.EventRecorder
	synced     atomic.Bool // the informers' caches are filled
}

// New builds the runtime; nothing talks to the apiserver before Run.
func New(opts Options) (*Runtime, error) {
	switch {
	case opts.Client == nil:
		return nil, errors.New("incluster: Options.Client is required")
	case opts.ReleaseNamespace == "":
		return nil, errors.New("incluster: Options.ReleaseNamespace is required (--namespace)")
	case opts.Store == nil:
		return nil, errors.New("incluster: Options.Store is required")
	case !opts.WebhookDisabled && opts.WebhookListen == "":
		return nil, errors.New("incluster: Options.WebhookListen is required (--webhook-listen)")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Runtime{opts: opts, log: log}
	r.informers = controller.NewInformers(opts.Client, opts.Resync)
	// Only the edge Services' EndpointSlices: readiness for the injector.
	r.slices = informers.NewSharedInformerFactoryWithOptions(opts.Client, opts.Resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = discoveryv1.LabelServiceName + "=" + kubecontract.EdgeName
		}))

	// Events say why a namespace's edge changed or could not be made,
	// where `kubectl describe` shows them.
	r.events = record.NewBroadcaster()
	recorder := r.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: kubecontract.ManagedByValue})
	r.recorder = recorder
	var view *clusterview.View
	ctlOpts := []controller.Option{controller.WithEventRecorder(recorder), controller.WithOnEdgeChange(func(ns string) {
		if view != nil {
			view.Changed(ns)
		}
	})}
	if opts.Workers > 0 {
		ctlOpts = append(ctlOpts, controller.WithWorkers(opts.Workers))
	}
	if opts.Mirror {
		ctlOpts = append(ctlOpts, controller.WithMirror(opts.ReleaseNamespace, opts.MirrorAuth))
		if opts.MirrorTLSSecret != "" {
			ctlOpts = append(ctlOpts, controller.WithMirrorTLS(opts.MirrorTLSSecret))
		}
	}
	if opts.CABundle != nil {
		ctlOpts = append(ctlOpts, controller.WithCABundle(opts.CABundle))
	}
	if opts.Metrics != nil {
		ctlOpts = append(ctlOpts, controller.WithReconcileObserver(opts.Metrics.Reconciled))
	}
	ctl, err := controller.New(opts.Client, r.informers, opts.Edge, log, ctlOpts...)
	if err != nil {
		return nil, fmt.Errorf("namespace controller: %w", err)
	}
	if err := r.newGate(opts); err != nil {
		return nil, err
	}
	view, err = clusterview.New(clusterview.Options{
		ConfigStore: opts.Store, Edges: ctl, EndpointSlices: r.slices.Discovery().V1().EndpointSlices(),
		NodeAccess: r.gate, Logger: log.With("component", "clusterview"),
	})
	if err != nil {
		return nil, err
	}
	r.controller, r.view = ctl, view

	var leaderOpts []leader.Option
	if opts.PodName != "" {
		leaderOpts = append(leaderOpts, leader.WithPodName(opts.PodName))
	}
	if opts.LeaseDuration > 0 || opts.RenewDeadline > 0 || opts.RetryPeriod > 0 {
		leaderOpts = append(leaderOpts, leader.WithTimings(
			cmp.Or(opts.LeaseDuration, leader.DefaultLeaseDuration),
			cmp.Or(opts.RenewDeadline, leader.DefaultRenewDeadline),
			cmp.Or(opts.RetryPeriod, leader.DefaultRetryPeriod)))
	}
	r.elector, err = leader.New(opts.Client, opts.ReleaseNamespace, kubecontract.LeaseName, log.With("component", "leader"), leaderOpts...)
	if err != nil {
		return nil, err
	}

	r.keeper = opts.Keeper
	if r.keeper == nil && !opts.WebhookDisabled {
		wo := opts.Webhook
		wo.Namespace = opts.ReleaseNamespace
		if wo.Logger == nil {
			wo.Logger = log
		}
		r.keeper, err = webhookconfig.New(opts.Client, wo)
		if err != nil {
			return nil, fmt.Errorf("webhook: %w", err)
		}
	}
	if !opts.WebhookDisabled {
		hopts := []webhook.Option{webhook.WithLogger(log.With("component", "injector")),
			webhook.WithReleaseNamespace(opts.ReleaseNamespace)}
		if opts.Metrics != nil {
			hopts = append(hopts, webhook.WithOutcomeObserver(opts.Metrics.Admitted))
		}
		mux := http.NewServeMux()
		mux.Handle(webhook.Path, webhook.NewHandler(view, hopts...))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
		r.handler = mux
	}
	return r, nil
}

// Ready reports why the runtime is not ready: informer caches not synced
// yet, or no TLS certificate loaded yet (nil: ready).
func (r *Runtime) Ready() error {
	if !r.synced.Load() {
		return errors.New("informer caches not synced yet")
	}
	if r.keeper != nil {
		if _, err := r.keeper.GetCertificate(nil); err != nil {
			return err
		}
	}
	return nil
}

// nodeEventInterval is how often the leader compares each node's access
// with the last check and records the changes as events.
const nodeEventInterval = 5 * time.Second

// newGate builds the node-access gate; with forwarder or auto it reads
// the nodes and the forwarder's pods in the release namespace.
func (r *Runtime) newGate(opts Options) error {
	mode := cmp.Or(opts.NodeAccess, nodeaccess.ModeNodePort)
	if mode == nodeaccess.ModeNodePort {
		g, err := nodeaccess.New(mode, opts.ReleaseNamespace, nil, nil)
		r.gate = g
		return err
	}
	nodes := informers.NewSharedInformerFactory(opts.Client, opts.Resync)
	pods := informers.NewSharedInformerFactoryWithOptions(opts.Client, opts.Resync, informers.WithNamespace(opts.ReleaseNamespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = nodeaccess.ForwarderSelector().String() }))
	g, err := nodeaccess.New(mode, opts.ReleaseNamespace, nodes.Core().V1().Nodes(), pods.Core().V1().Pods())
	if err != nil {
		return err
	}
	r.gate, r.nodeInfs = g, []informers.SharedInformerFactory{nodes, pods}
	return nil
}

// NodeAccess is the node-access gate: its mode and, per node, whether
// 127.0.0.1:<nodePort> works there (the admin API reports it).
func (r *Runtime) NodeAccess() *nodeaccess.Gate { return r.gate }

// Elector is the leader elector, for status and tests.
func (r *Runtime) Elector() *leader.Elector { return r.elector }

// Run starts the informers and runs every part until ctx ends or one
// fails. The webhook server's listener is bound first, so a bad address
// fails at once.
func (r *Runtime) Run(ctx context.Context) error {
	var lis net.Listener
	if r.handler != nil {
		var err error
		if lis, err = net.Listen("tcp", r.opts.WebhookListen); err != nil {
			return fmt.Errorf("webhook listen %s: %w", r.opts.WebhookListen, err)
		}
	}
	g, ctx := errgroup.WithContext(ctx)
	r.events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: r.opts.Client.CoreV1().Events("")})
	defer r.events.Shutdown()
	r.informers.Start(ctx.Done())
	r.slices.Start(ctx.Done())
	for _, f := range r.nodeInfs {
		f.Start(ctx.Done())
	}
	g.Go(func() error {
		if !r.informers.WaitForCacheSync(ctx.Done()) {
			return nil // ctx ended first
		}
		for _, f := range append([]informers.SharedInformerFactory{r.slices}, r.nodeInfs...) {
			for _, ok := range f.WaitForCacheSync(ctx.Done()) {
				if !ok {
					return nil
				}
			}
		}
		r.synced.Store(true)
		r.log.Info("informer caches synced")
		return nil
	})
	defer func() {
		r.informers.Shutdown()
		r.slices.Shutdown()
		for _, f := range r.nodeInfs {
			f.Shutdown()
		}
	}()
	g.Go(func() error { return r.view.Run(ctx) })
	g.Go(func() error {
		return r.elector.Run(ctx, func(leaderCtx context.Context) {
			// The leader alone records node-access events, so replicas
			// do not repeat each other.
			evCtx, stopEvents := context.WithCancel(leaderCtx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				r.gate.ReportEvents(evCtx, r.recorder, nodeEventInterval)
			}()
			if err := r.controller.Run(leaderCtx); err != nil {
				r.log.Error("namespace controller stopped", "err", err)
			}
			stopEvents()
			<-done
		})
	})
	if r.keeper != nil {
		g.Go(func() error { return r.keeper.Run(ctx) })
	}
	if r.handler != nil {
		g.Go(func() error { return r.serveWebhook(ctx, lis) })
	}
	return g.Wait()
}

// serveWebhook serves the injector over HTTPS with the keeper's current
// certificate until ctx ends.
func (r *Runtime) serveWebhook(ctx context.Context, lis net.Listener) error {
	srv := &http.Server{
		Handler:           r.handler,
		TLSConfig:         r.keeper.TLSConfig(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		ErrorLog:          slog.NewLogLogger(r.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(lis, "", "") }()
	r.log.Info("serving the injector webhook", "addr", lis.Addr().String(), "path", webhook.Path)
	select {
	case err := <-errc:
		return fmt.Errorf("serve webhook on %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		r.log.Warn("webhook server shutdown", "err", err)
	}
	return nil
}
