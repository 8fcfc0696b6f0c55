// Package clusterview projects the cluster into the control plane's
// configuration: every replica (leader or not) watches the opted-in
// namespaces, their edge Service, pull Secret and the tenant's own
// upstream-credentials Secret, and keeps
// config.State.Namespaces equal to what it sees — a namespace is
// configured (its edge receives a snapshot, the admin API lists it) once
// its pull token and node port exist, and no sooner, so an edge is never
// configured without a pull token. It also answers the injector's
// questions (webhook.Policies): a namespace's rewrite rules, pull Secret
// and whether its edge has a ready endpoint.
//
// The controller (package controller, leader only) creates the objects;
// this package reads which are in place through the controller's caches.
package clusterview

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	discoveryinformers "k8s.io/client-go/informers/discovery/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/controller"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/snapshot"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/webhook"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

// ConfigStore is the committed configuration (configstore.Store): the view replaces
// State.Namespaces with UpdateRuntime, which never persists — the cluster
// is where namespaces live.
type ConfigStore interface {
	Current() *snapshot.Set
	UpdateRuntime(ctx context.Context, op string, mutate func(st *config.State) bool) (*snapshot.Set, error)
}

// Edges are the namespaces whose edge objects are in place
// (controller.Controller: it answers from its informers on every
// replica, leader or not).
type Edges interface {
	Edges() ([]controller.Edge, error)
	HasSynced() bool
}

// NodeAccess says why 127.0.0.1:<nodePort> may not work on every node a
// new pod may land on ("" when it does); nodeaccess.Gate implements it.
type NodeAccess interface {
	NotReady() string
}

// Options configure a View.
type Options struct {
	ConfigStore ConfigStore
	Edges       Edges
	// EndpointSlices may be restricted to the edge Service's name
	// (discoveryv1.LabelServiceName); the caller starts it.
	EndpointSlices discoveryinformers.EndpointSliceInformer
	// NodeAccess, when set, must also say yes before the injector
	// rewrites (nodeaccess.Gate: with nodeAccess forwarder or auto, a
	// ready forwarder on every schedulable node).
	NodeAccess NodeAccess
	Logger     *slog.Logger
	// Debounce gathers a burst of changes (a thousand namespaces labelled
	// at once) into one recomputation; default 100 ms.
	Debounce time.Duration
}

// View keeps the store's namespaces in line with the cluster.
type View struct {
	store     ConfigStore
	edges     Edges
	epsLister discoverylisters.EndpointSliceLister
	nodes     NodeAccess // nil: not checked
	synced    []cache.InformerSynced
	log       *slog.Logger
	debounce  time.Duration
	kick      chan struct{}
}

// New returns a View; wire Changed to the controller's change
// notifications (controller.WithOnEdgeChange) and Run it after starting
// the informers.
func New(opts Options) (*View, error) {
	switch {
	case opts.ConfigStore == nil:
		return nil, fmt.Errorf("clusterview: Options.Store is required")
	case opts.Edges == nil:
		return nil, fmt.Errorf("clusterview: Options.Edges is required")
	case opts.EndpointSlices == nil:
		return nil, fmt.Errorf("clusterview: Options.EndpointSlices is required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	v := &View{
		store:     opts.ConfigStore,
		edges:     opts.Edges,
		epsLister: opts.EndpointSlices.Lister(),
		nodes:     opts.NodeAccess,
		log:       log,
		debounce:  opts.Debounce,
		kick:      make(chan struct{}, 1),
	}
	if v.debounce <= 0 {
		v.debounce = 100 * time.Millisecond
	}
	// Readiness is read on demand by the webhook; the informer only has
	// to be synced.
	v.synced = []cache.InformerSynced{opts.Edges.HasSynced, opts.EndpointSlices.Informer().HasSynced}
	return v, nil
}

// Changed tells the view that namespace's edge may have changed. Every
// change means "recompute": the work is O(namespaces) and debounced, so
// there is nothing to gain from per-namespace bookkeeping.
func (v *View) Changed(string) { v.trigger() }

func (v *View) trigger() {
	select {
	case v.kick <- struct{}{}:
	default:
	}
}

// Run waits for the informers' caches, then keeps the store in line until
// ctx ends.
func (v *View) Run(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), v.synced...) {
		return fmt.Errorf("clusterview: caches did not sync: %w", ctx.Err())
	}
	v.trigger()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-v.kick:
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(v.debounce):
		}
		if err := v.Sync(ctx); err != nil {
			v.log.Error("namespaces not applied; retrying on the next change", "err", err)
			// A build error (an invalid namespace) would repeat until the
			// cluster changes; retry later anyway in case it was transient.
			time.AfterFunc(5*time.Second, v.trigger)
		}
	}
}

// Sync computes the configured namespaces from the caches and commits
// them when they differ from the store's.
func (v *View) Sync(ctx context.Context) error {
	want, err := v.desired()
	if err != nil {
		return err
	}
	_, err = v.store.UpdateRuntime(ctx, "cluster namespaces", func(st *config.State) bool {
		if namespacesEqual(st.Namespaces, want) {
			return false
		}
		st.Namespaces = want
		return true
	})
	if err != nil {
		return fmt.Errorf("apply cluster namespaces: %w", err)
	}
	return nil
}

// desired is one configured namespace per edge in place.
func (v *View) desired() (map[string]*config.Namespace, error) {
	edges, err := v.edges.Edges()
	if err != nil {
		return nil, fmt.Errorf("read edges: %w", err)
	}
	out := make(map[string]*config.Namespace, len(edges))
	for _, e := range edges {
		out[e.Namespace] = &config.Namespace{PullToken: config.Secret(e.PullToken), EdgeAddress: e.Address,
			RegistryCredentials: e.RegistryCredentials}
	}
	return out, nil
}

func namespacesEqual(a, b map[string]*config.Namespace) bool {
	return maps.EqualFunc(a, b, func(x, y *config.Namespace) bool {
		return x.PullToken == y.PullToken && x.EdgeAddress == y.EdgeAddress && x.EdgeToken == y.EdgeToken &&
			x.MaxConcurrentFills == y.MaxConcurrentFills && slices.Equal(x.AllowedPrefixes, y.AllowedPrefixes) &&
			maps.Equal(x.RegistryCredentials, y.RegistryCredentials)
	})
}

var _ webhook.Policies = (*View)(nil)

// Namespace implements webhook.Policies: the injector's view of namespace
// name; ok is false when the namespace is not configured (not opted in, or
// its edge objects not there yet).
func (v *View) Namespace(_ context.Context, name string) (webhook.Namespace, bool) {
	set := v.store.Current()
	ns, ok := set.Namespace(name)
	if !ok {
		return webhook.Namespace{}, false
	}
	e := webhook.Namespace{Rules: set.RewriteRules(ns, ns.EdgeAddress), PullSecret: kubecontract.PullSecretName}
	ready, err := v.edgeReady(name)
	switch {
	case err != nil:
		e.NotReady = "cannot read the edge's endpoints: " + err.Error()
	case !ready:
		e.NotReady = "the edge " + kubecontract.EdgeName + " has no ready endpoint yet"
	case v.nodes != nil:
		e.NotReady = v.nodes.NotReady()
	}
	return e, true
}

// edgeReady reports whether the edge Service has a ready endpoint, from its
// EndpointSlices (a nil ready condition means ready, as the API defines).
func (v *View) edgeReady(ns string) (bool, error) {
	slices, err := v.epsLister.EndpointSlices(ns).List(labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: kubecontract.EdgeName}))
	if err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("list endpointslices: %w", err)
	}
	for _, s := range slices {
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				return true, nil
			}
		}
	}
	return false, nil
}
