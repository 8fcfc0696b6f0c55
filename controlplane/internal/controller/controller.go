// Package controller is the control plane's namespace controller
// (docs/kubernetes.md, docs/security.md). For every namespace labelled
// kubecontract.OptInLabel=kubecontract.OptInValue it creates, and keeps in
// shape, the namespace's edge: a ServiceAccount, a pull Secret holding the
// namespace's random pull token for 127.0.0.1:<nodePort>, a NodePort
// Service whose node port is kept stable, a Deployment of the edge that
// dials the control plane with a projected ServiceAccount token and
// advertises the node-local address, and a PodDisruptionBudget. When the
// label goes (or the namespace terminates), it deletes what it made. It
// also reads, never writes, the tenant's own Secret
// kubecontract.UpstreamCredentialsSecretName: Edge returns its
// credentials, and a malformed one gets a Warning event.
//
// Every informer but the namespaces' lists and watches one object name
// (NewInformers), so that RBAC can name the objects the control plane may
// touch (PolicyRules, deploy/rbac.yaml).
//
// It has the shape of Kubernetes' sample-controller: informers and
// listers for reads, the clientset for writes, a rate-limited workqueue of
// namespace names, and sync(ctx, namespace). The informers run on every
// replica (so Edge and Edges answer on standbys too); Run, which writes,
// runs only while its context lives — the leader's context.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	policylisters "k8s.io/client-go/listers/policy/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

// DefaultWorkers is how many namespaces are reconciled at once.
const DefaultWorkers = 4

// DefaultNodePortGrace is how long a remembered node port that the
// apiserver calls allocated is asked for again before the Service takes
// another one. A deleted Service's port is released only after its watch
// event went out, so a Service recreated at once can find its own port
// still allocated for a moment.
const DefaultNodePortGrace = 3 * time.Second

// Controller reconciles the edges of opted-in namespaces.
type Controller struct {
	client   kubernetes.Interface
	tmpl     EdgeTemplate
	log      *slog.Logger
	recorder record.EventRecorder
	workers  int
	onChange func(namespace string)

	namespaces      corelisters.NamespaceLister
	serviceAccounts corelisters.ServiceAccountLister
	secrets         corelisters.SecretLister
	services        corelisters.ServiceLister
	deployments     appslisters.DeploymentLister
	pdbs            policylisters.PodDisruptionBudgetLister
	// credSecrets: the tenants' Secrets
	// kubecontract.UpstreamCredentialsSecretName.
	credSecrets corelisters.SecretLister
	synced      []cache.InformerSynced
	// ca and configMaps: the CA ConfigMaps (WithCABundle; nil without).
	ca         *CABundle
	configMaps corelisters.ConfigMapLister
	// reconciled observes each sync (WithReconcileObserver; may be nil).
	reconciled func(err error, d time.Duration)
	// mirrorNS gets an edge without the opt-in label (WithMirror);
	// mirrorAuth false leaves its pull token out of its configuration.
	mirrorNS        string
	mirrorAuth      bool
	mirrorTLSSecret string

	mu sync.Mutex
	// queue is non-nil while Run runs; events outside Run are dropped
	// (Run starts with every namespace queued).
	queue workqueue.TypedRateLimitingInterface[string]
	// wrongValue holds, per namespace, the wrong opt-in value already
	// logged, so it is logged once.
	wrongValue map[string]string
	// portBusySince holds, per namespace, when the apiserver first
	// refused the remembered node port as allocated; nodePortGrace is how
	// long the controller asks again before it takes another port.
	portBusySince map[string]time.Time
	nodePortGrace time.Duration
	// badCredentials holds, per namespace, the UID and resourceVersion of
	// the malformed upstream-credentials Secret already reported, so it
	// is reported once per version.
	badCredentials map[string]string
}

// Option configures a Controller.
type Option func(*Controller)

// WithWorkers sets how many namespaces are reconciled concurrently
// (default DefaultWorkers).
func WithWorkers(n int) Option { return func(c *Controller) { c.workers = n } }

// WithEventRecorder emits Kubernetes events (a changed node port, a
// regenerated pull Secret) besides the log lines.
func WithEventRecorder(r record.EventRecorder) Option {
	return func(c *Controller) { c.recorder = r }
}

// WithOnEdgeChange calls fn with a namespace's name whenever something
// that Edge(namespace) reads may have changed: the namespace, its pull
// Secret, its Service or its upstream-credentials Secret. It runs on every replica, leader or not, from the
// informers' goroutines: it must not block.
func WithOnEdgeChange(fn func(namespace string)) Option {
	return func(c *Controller) { c.onChange = fn }
}

// ManagedSelector selects the objects the controller owns:
// kubecontract.ManagedByLabel=ManagedByValue and
// kubecontract.ComponentLabel=EdgeComponent (the injector's objects share
// the managed-by label, with another component).
func ManagedSelector() labels.Selector {
	return labels.SelectorFromSet(labels.Set{
		kubecontract.ManagedByLabel: kubecontract.ManagedByValue,
		kubecontract.ComponentLabel: kubecontract.EdgeComponent,
	})
}

// OptedIn reports whether ns gets an edge: its opt-in label has exactly
// kubecontract.OptInValue and it is not terminating.
func OptedIn(ns *corev1.Namespace) bool {
	return ns.DeletionTimestamp == nil && ns.Labels[kubecontract.OptInLabel] == kubecontract.OptInValue
}

// New returns a controller reading from inf (see NewInformers: each
// factory must select its objects by name, or the controller will cache
// every object of those kinds in the cluster). It registers the
// informers; the caller starts the factories.
func New(client kubernetes.Interface, inf *Informers, tmpl EdgeTemplate, log *slog.Logger, opts ...Option) (*Controller, error) {
	t, err := tmpl.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Controller{
		client: client, tmpl: t, log: log, workers: DefaultWorkers,
		wrongValue: map[string]string{}, portBusySince: map[string]time.Time{}, nodePortGrace: DefaultNodePortGrace,
		badCredentials: map[string]string{},
	}
	for _, o := range opts {
		o(c)
	}
	if c.workers < 1 {
		return nil, fmt.Errorf("namespace controller: %d workers, want at least 1", c.workers)
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("component", "namespace-controller")

	nsInf := inf.Namespaces.Core().V1().Namespaces()
	saInf := inf.Edge.Core().V1().ServiceAccounts()
	secInf := inf.PullSecrets.Core().V1().Secrets()
	svcInf := inf.Edge.Core().V1().Services()
	depInf := inf.Edge.Apps().V1().Deployments()
	pdbInf := inf.Edge.Policy().V1().PodDisruptionBudgets()
	credInf := inf.UpstreamCredentials.Core().V1().Secrets()
	c.namespaces, c.serviceAccounts, c.secrets = nsInf.Lister(), saInf.Lister(), secInf.Lister()
	c.services, c.deployments, c.pdbs = svcInf.Lister(), depInf.Lister(), pdbInf.Lister()
	c.credSecrets = credInf.Lister()

	regs := []struct {
		inf     cache.SharedIndexInformer
		handler cache.ResourceEventHandler
	}{
		{nsInf.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { c.namespaceChanged(nil, obj) },
			UpdateFunc: c.namespaceChanged,
			DeleteFunc: c.namespaceDeleted,
		}},
		{saInf.Informer(), c.objectHandler(kubecontract.EdgeName, false)},
		{secInf.Informer(), c.objectHandler(kubecontract.PullSecretName, true)},
		{svcInf.Informer(), c.objectHandler(kubecontract.EdgeName, true)},
		{depInf.Informer(), c.objectHandler(kubecontract.EdgeName, false)},
		{pdbInf.Informer(), c.objectHandler(kubecontract.EdgeName, false)},
		// The tenant's own Secret: checked by sync (warning events), read
		// by Edge.
		{credInf.Informer(), c.objectHandler(kubecontract.UpstreamCredentialsSecretName, true)},
	}
	for _, r := range regs {
		reg, err := r.inf.AddEventHandler(r.handler)
		if err != nil {
			return nil, fmt.Errorf("namespace controller: add event handler: %w", err)
		}
		c.synced = append(c.synced, reg.HasSynced)
	}
	if err := c.registerCAConfigMaps(inf.CAConfigMaps); err != nil {
		return nil, err
	}
	return c, nil
}

// Run reconciles namespaces with the configured number of workers until
// ctx ends (the leader's context: when the lease is lost, ctx ends and Run
// returns only after every worker stopped writing). It waits for the
// informers' caches first and queues every namespace that has the opt-in
// label or objects of the controller. Run may be called again after it
// returned (leadership regained), never twice at once.
func (c *Controller) Run(ctx context.Context) error {
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	c.mu.Lock()
	if c.queue != nil {
		c.mu.Unlock()
		q.ShutDown()
		return errors.New("namespace controller: Run is already running")
	}
	c.queue = q
	c.mu.Unlock()
	defer func() {
		q.ShutDown()
		c.mu.Lock()
		c.queue = nil
		c.mu.Unlock()
	}()

	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return nil // ctx ended first
	}
	n := c.enqueueAll(q)
	c.log.Info("namespace controller running", "workers", c.workers, "queued", n)

	var wg sync.WaitGroup
	for range c.workers {
		wg.Go(func() {
			for c.processNext(ctx, q) {
			}
		})
	}
	<-ctx.Done()
	q.ShutDown()
	wg.Wait()
	c.log.Info("namespace controller stopped")
	return nil
}

// processNext reconciles one namespace; false once the queue shut down.
func (c *Controller) processNext(ctx context.Context, q workqueue.TypedRateLimitingInterface[string]) bool {
	ns, shutdown := q.Get()
	if shutdown {
		return false
	}
	defer q.Done(ns)
	start := time.Now()
	err := c.sync(ctx, ns)
	if c.reconciled != nil {
		c.reconciled(err, time.Since(start))
	}
	switch {
	case err == nil:
		q.Forget(ns)
	case ctx.Err() != nil:
		// Stopping (lease lost): the next leader starts over.
	case errors.Is(err, errNodePortBusy) || apierrors.IsConflict(err):
		// Expected now and then: asked again shortly.
		c.log.Debug("namespace sync retrying", "namespace", ns, "retries", q.NumRequeues(ns), "err", err)
		q.AddRateLimited(ns)
	default:
		c.log.Warn("namespace sync failed; retrying", "namespace", ns, "retries", q.NumRequeues(ns), "err", err)
		q.AddRateLimited(ns)
	}
	return true
}

// enqueueAll queues every namespace with the opt-in label and every
// namespace holding an object of the controller.
func (c *Controller) enqueueAll(q workqueue.TypedRateLimitingInterface[string]) int {
	seen := map[string]bool{}
	add := func(ns string) {
		if !seen[ns] {
			seen[ns] = true
			q.Add(ns)
		}
	}
	if c.mirrorNS != "" {
		add(c.mirrorNS)
	}
	hasLabel, err := labels.NewRequirement(kubecontract.OptInLabel, "exists", nil)
	if err == nil {
		nss, _ := c.namespaces.List(labels.NewSelector().Add(*hasLabel))
		for _, ns := range nss {
			add(ns.Name)
		}
	}
	sel := ManagedSelector()
	sas, _ := c.serviceAccounts.List(sel)
	for _, o := range sas {
		add(o.Namespace)
	}
	secs, _ := c.secrets.List(sel)
	for _, o := range secs {
		add(o.Namespace)
	}
	svcs, _ := c.services.List(sel)
	for _, o := range svcs {
		add(o.Namespace)
	}
	deps, _ := c.deployments.List(sel)
	for _, o := range deps {
		add(o.Namespace)
	}
	pdbs, _ := c.pdbs.List(sel)
	for _, o := range pdbs {
		add(o.Namespace)
	}
	return len(seen)
}

func (c *Controller) enqueue(ns string) {
	c.mu.Lock()
	q := c.queue
	c.mu.Unlock()
	if q != nil {
		q.Add(ns)
	}
}

func (c *Controller) changed(ns string) {
	if c.onChange != nil {
		c.onChange(ns)
	}
}

// namespaceChanged queues a namespace that has (or had) the opt-in label.
// One that never had it holds nothing of the controller's, or its objects'
// informer queues it.
func (c *Controller) namespaceChanged(oldObj, newObj any) {
	ns, ok := newObj.(*corev1.Namespace)
	if !ok {
		return
	}
	_, has := ns.Labels[kubecontract.OptInLabel]
	if old, ok := oldObj.(*corev1.Namespace); ok {
		_, had := old.Labels[kubecontract.OptInLabel]
		has = has || had
		if c.optedIn(old) != c.optedIn(ns) {
			c.changed(ns.Name)
		}
	} else if c.optedIn(ns) {
		c.changed(ns.Name)
	}
	if has || c.isMirror(ns.Name) {
		c.enqueue(ns.Name)
	}
}

func (c *Controller) namespaceDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	ns, ok := obj.(*corev1.Namespace)
	if !ok {
		return
	}
	c.mu.Lock()
	delete(c.wrongValue, ns.Name)
	delete(c.portBusySince, ns.Name)
	delete(c.badCredentials, ns.Name)
	c.mu.Unlock()
	c.changed(ns.Name)
}

// objectHandler queues the namespace of an owned object called name that
// was added, changed or deleted (drift); notify also reports it to
// onChange.
func (c *Controller) objectHandler(name string, notify bool) cache.ResourceEventHandler {
	handle := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		m, ok := obj.(metav1.Object)
		if !ok || m.GetName() != name {
			return
		}
		c.enqueue(m.GetNamespace())
		if notify {
			c.changed(m.GetNamespace())
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    handle,
		UpdateFunc: func(_, obj any) { handle(obj) },
		DeleteFunc: handle,
	}
}
