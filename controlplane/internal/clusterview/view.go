// Package clusterview projects the cluster into the control plane's
// configuration: every replica (leader or not) watches the opted-in
// namespaces, their edge Service and pull Secret, and keeps
// config.State.Namespaces equal to what it sees — a namespace is
// configured (its edge receives a snapshot, the admin API lists it) once
// its pull token and node port exist, and no sooner, so an edge is never
// configured without a pull token. It also answers the injector's
// questions (webhook.Policies): a namespace's rewrite rules, pull Secret
// and whether its edge has a ready endpoint.
//
// The controller (package controller, leader only) creates the objects;
// this package only reads them.
package clusterview

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	coreinformers "k8s.io/client-go/informers/core/v1"
	discoveryinformers "k8s.io/client-go/informers/discovery/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/snapshot"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/webhook"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/kubecontract"
)

// Store is the committed configuration (store.Store): the view replaces
// State.Namespaces with UpdateRuntime, which never persists — the cluster
// is where namespaces live.
type Store interface {
	Current() *snapshot.Set
	UpdateRuntime(ctx context.Context, op string, mutate func(st *config.State) bool) (*snapshot.Set, error)
}

// PullTokenFunc reads the pull token out of a namespace's pull Secret
// (the controller's format); an error means the Secret is not usable yet.
type PullTokenFunc func(*corev1.Secret) (token string, err error)

// Informers are the shared informers the view reads. Services and Secrets
// may be restricted to the managed-by label, EndpointSlices to the edge
// Service's name; the caller starts them.
type Informers struct {
	Namespaces     coreinformers.NamespaceInformer
	Services       coreinformers.ServiceInformer
	Secrets        coreinformers.SecretInformer
	EndpointSlices discoveryinformers.EndpointSliceInformer
}

// Options configure a View.
type Options struct {
	Store     Store
	Informers Informers
	PullToken PullTokenFunc
	Logger    *slog.Logger
	// Debounce gathers a burst of informer events (a thousand namespaces
	// labelled at once) into one recomputation; default 100 ms.
	Debounce time.Duration
}

// View keeps the store's namespaces in line with the cluster.
type View struct {
	store     Store
	nsLister  corelisters.NamespaceLister
	svcLister corelisters.ServiceLister
	secLister corelisters.SecretLister
	epsLister discoverylisters.EndpointSliceLister
	synced    []cache.InformerSynced
	pullToken PullTokenFunc
	log       *slog.Logger
	debounce  time.Duration
	kick      chan struct{}

	mu      sync.Mutex
	skipped map[string]string // namespace → why it is not configured, logged once per reason
}

// New registers the view's event handlers on the informers; Run it after
// starting them.
func New(opts Options) (*View, error) {
	in := opts.Informers
	switch {
	case opts.Store == nil:
		return nil, fmt.Errorf("clusterview: Options.Store is required")
	case in.Namespaces == nil || in.Services == nil || in.Secrets == nil || in.EndpointSlices == nil:
		return nil, fmt.Errorf("clusterview: Options.Informers needs namespaces, services, secrets and endpointslices")
	case opts.PullToken == nil:
		return nil, fmt.Errorf("clusterview: Options.PullToken is required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	v := &View{
		store:     opts.Store,
		nsLister:  in.Namespaces.Lister(),
		svcLister: in.Services.Lister(),
		secLister: in.Secrets.Lister(),
		epsLister: in.EndpointSlices.Lister(),
		pullToken: opts.PullToken,
		log:       log,
		debounce:  opts.Debounce,
		kick:      make(chan struct{}, 1),
		skipped:   map[string]string{},
	}
	if v.debounce <= 0 {
		v.debounce = 100 * time.Millisecond
	}
	// Every event means "recompute"; the work is O(namespaces) and
	// debounced, so there is nothing to gain from per-key bookkeeping.
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { v.trigger() },
		UpdateFunc: func(any, any) { v.trigger() },
		DeleteFunc: func(any) { v.trigger() },
	}
	for _, inf := range []cache.SharedIndexInformer{in.Namespaces.Informer(), in.Services.Informer(), in.Secrets.Informer()} {
		if _, err := inf.AddEventHandler(h); err != nil {
			return nil, fmt.Errorf("clusterview: add event handler: %w", err)
		}
		v.synced = append(v.synced, inf.HasSynced)
	}
	// Readiness is read on demand by the webhook; the informer only has
	// to be synced.
	v.synced = append(v.synced, in.EndpointSlices.Informer().HasSynced)
	return v, nil
}

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

// desired reads the caches: an opted-in, live namespace whose edge Service
// has a node port and whose pull Secret holds a token.
func (v *View) desired() (map[string]*config.Namespace, error) {
	nss, err := v.nsLister.List(labels.SelectorFromSet(labels.Set{kubecontract.OptInLabel: kubecontract.OptInValue}))
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	out := make(map[string]*config.Namespace, len(nss))
	seen := make(map[string]bool, len(nss))
	for _, ns := range nss {
		seen[ns.Name] = true
		cfg, why := v.namespace(ns)
		if cfg == nil {
			v.noteSkipped(ns.Name, why)
			continue
		}
		v.noteSkipped(ns.Name, "")
		out[ns.Name] = cfg
	}
	v.mu.Lock()
	for name := range v.skipped {
		if !seen[name] {
			delete(v.skipped, name)
		}
	}
	v.mu.Unlock()
	return out, nil
}

func (v *View) namespace(ns *corev1.Namespace) (*config.Namespace, string) {
	if ns.DeletionTimestamp != nil {
		return nil, "terminating"
	}
	port, why := v.nodePort(ns.Name)
	if port == 0 {
		return nil, why
	}
	sec, err := v.secLister.Secrets(ns.Name).Get(kubecontract.PullSecretName)
	if err != nil {
		return nil, "no pull Secret " + kubecontract.PullSecretName + " yet"
	}
	token, err := v.pullToken(sec)
	if err != nil || token == "" {
		return nil, fmt.Sprintf("pull Secret %s not usable: %v", kubecontract.PullSecretName, err)
	}
	return &config.Namespace{
		PullToken:   config.Secret(token),
		EdgeAddress: "127.0.0.1:" + strconv.Itoa(int(port)),
	}, ""
}

func (v *View) nodePort(ns string) (int32, string) {
	svc, err := v.svcLister.Services(ns).Get(kubecontract.EdgeName)
	if err != nil {
		return 0, "no edge Service " + kubecontract.EdgeName + " yet"
	}
	for _, p := range svc.Spec.Ports {
		if p.NodePort != 0 {
			return p.NodePort, ""
		}
	}
	return 0, "edge Service has no node port yet"
}

// noteSkipped logs why a namespace is not configured, once per reason.
func (v *View) noteSkipped(ns, why string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.skipped[ns] == why {
		return
	}
	if why == "" {
		delete(v.skipped, ns)
		return
	}
	v.skipped[ns] = why
	v.log.Info("opted-in namespace not configured yet", "namespace", ns, "reason", why)
}

func namespacesEqual(a, b map[string]*config.Namespace) bool {
	return maps.EqualFunc(a, b, func(x, y *config.Namespace) bool {
		return x.PullToken == y.PullToken && x.EdgeAddress == y.EdgeAddress && x.EdgeToken == y.EdgeToken &&
			x.MaxConcurrentFills == y.MaxConcurrentFills && slices.Equal(x.AllowedPrefixes, y.AllowedPrefixes)
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
