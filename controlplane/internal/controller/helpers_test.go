package controller

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
)

func testTemplate() EdgeTemplate {
	return EdgeTemplate{
		Image:               "registry.example/selfhost/edge:v1",
		ControlPlaneAddress: "selfhost-controlplane.selfhost-system.svc:9090",
		TokenAudience:       "k8s-selfhost-repo",
	}
}

func namespace(name string, lbls map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
}

func optedIn(name string) *corev1.Namespace {
	return namespace(name, map[string]string{kubecontract.OptInLabel: kubecontract.OptInValue})
}

// nodePorts plays the apiserver's node port allocator on a fake
// clientset: it allocates from 30000 up, refuses a port held by another
// Service with the apiserver's Invalid error, and releases on delete.
type nodePorts struct {
	mu    sync.Mutex
	owner map[int32]string
	next  int32
}

func installNodePorts(c *fake.Clientset) *nodePorts {
	p := &nodePorts{owner: map[int32]string{}, next: 30000}
	write := func(action k8stesting.Action) (bool, runtime.Object, error) {
		// Registered for create and update: both actions carry the object
		// (k8stesting.CreateAction and UpdateAction have one method set).
		var svc *corev1.Service
		if a, ok := action.(interface{ GetObject() runtime.Object }); ok {
			svc, _ = a.GetObject().(*corev1.Service)
		}
		if svc == nil || svc.Spec.Type != corev1.ServiceTypeNodePort {
			return false, nil, nil
		}
		key := action.GetNamespace() + "/" + svc.Name
		p.mu.Lock()
		defer p.mu.Unlock()
		for i := range svc.Spec.Ports {
			port := &svc.Spec.Ports[i].NodePort
			if *port == 0 {
				for p.owner[p.next] != "" {
					p.next++
				}
				*port = p.next
			}
			if o := p.owner[*port]; o != "" && o != key {
				path := field.NewPath("spec", "ports").Index(i).Child("nodePort")
				return true, nil, apierrors.NewInvalid(schema.GroupKind{Kind: "Service"}, svc.Name,
					field.ErrorList{field.Invalid(path, *port, "provided port is already allocated")})
			}
		}
		for port, o := range p.owner {
			if o == key {
				delete(p.owner, port)
			}
		}
		for _, sp := range svc.Spec.Ports {
			p.owner[sp.NodePort] = key
		}
		return false, nil, nil
	}
	c.PrependReactor("create", "services", write)
	c.PrependReactor("update", "services", write)
	c.PrependReactor("delete", "services", func(action k8stesting.Action) (bool, runtime.Object, error) {
		key := action.GetNamespace() + "/" + action.(k8stesting.DeleteAction).GetName()
		p.mu.Lock()
		defer p.mu.Unlock()
		for port, o := range p.owner {
			if o == key {
				delete(p.owner, port)
			}
		}
		return false, nil, nil
	})
	return p
}

// env is a controller on a fake clientset whose informers are not
// started: refresh copies the clientset's objects into their caches, so
// each sync sees exactly the current state.
type env struct {
	t      *testing.T
	ctx    context.Context
	client *fake.Clientset
	inf    *Informers
	c      *Controller
	logs   *testkit.LogBuffer
}

func newEnv(t *testing.T, tmpl EdgeTemplate, objs ...runtime.Object) *env {
	t.Helper()
	client := fake.NewClientset(objs...)
	installNodePorts(client)
	inf := NewInformers(client, 0)
	logs := &testkit.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := New(client, inf, tmpl, log)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, ctx: t.Context(), client: client, inf: inf, c: c, logs: logs}
}

// refresh replaces every informer cache with the clientset's objects (the
// managed ones filtered by the managed-by label, and all by name, as the
// real informers' selectors do: the fake clientset ignores field
// selectors).
func (e *env) refresh() {
	e.t.Helper()
	ctx := e.ctx
	sel := metav1.ListOptions{LabelSelector: ManagedSelector().String()}
	replace := func(inf cache.SharedIndexInformer, items []any, err error) {
		e.t.Helper()
		if err != nil {
			e.t.Fatal(err)
		}
		if err := inf.GetIndexer().Replace(items, ""); err != nil {
			e.t.Fatal(err)
		}
	}
	core, apps := e.client.CoreV1(), e.client.AppsV1()
	nss, err := core.Namespaces().List(ctx, metav1.ListOptions{})
	replace(e.inf.Namespaces.Core().V1().Namespaces().Informer(), items(nss.Items), err)
	sas, err := core.ServiceAccounts("").List(ctx, sel)
	replace(e.inf.Edge.Core().V1().ServiceAccounts().Informer(), named(sas.Items, kubecontract.EdgeName), err)
	secs, err := core.Secrets("").List(ctx, sel)
	replace(e.inf.PullSecrets.Core().V1().Secrets().Informer(), named(secs.Items, kubecontract.PullSecretName), err)
	all, err := core.Secrets("").List(ctx, metav1.ListOptions{})
	replace(e.inf.UpstreamCredentials.Core().V1().Secrets().Informer(), named(all.Items, kubecontract.UpstreamCredentialsSecretName), err)
	svcs, err := core.Services("").List(ctx, sel)
	replace(e.inf.Edge.Core().V1().Services().Informer(), named(svcs.Items, kubecontract.EdgeName), err)
	deps, err := apps.Deployments("").List(ctx, sel)
	replace(e.inf.Edge.Apps().V1().Deployments().Informer(), named(deps.Items, kubecontract.EdgeName), err)
	pdbs, err := e.client.PolicyV1().PodDisruptionBudgets("").List(ctx, sel)
	replace(e.inf.Edge.Policy().V1().PodDisruptionBudgets().Informer(), named(pdbs.Items, kubecontract.EdgeName), err)
}

// named is items of the objects called name.
func named[T any, PT interface {
	*T
	GetName() string
}](list []T, name string) []any {
	var out []any
	for i := range list {
		if PT(&list[i]).GetName() == name {
			out = append(out, &list[i])
		}
	}
	return out
}

func items[T any](list []T) []any {
	out := make([]any, len(list))
	for i := range list {
		out[i] = &list[i]
	}
	return out
}

// sync refreshes the caches and syncs ns.
func (e *env) sync(ns string) error {
	e.t.Helper()
	e.refresh()
	return e.c.sync(e.ctx, ns)
}

func (e *env) mustSync(ns string) {
	e.t.Helper()
	if err := e.sync(ns); err != nil {
		e.t.Fatalf("sync %s: %v", ns, err)
	}
}

// writes are the create, update, patch and delete calls since the last
// clearActions.
func (e *env) writes() []string {
	var out []string
	for _, a := range e.client.Actions() {
		switch a.GetVerb() {
		case "create", "update", "patch", "delete":
			out = append(out, fmt.Sprintf("%s %s %s", a.GetVerb(), a.GetResource().Resource, a.GetNamespace()))
		}
	}
	return out
}

// edgeObjects reads the five objects of ns from the clientset; missing
// ones are nil.
type edgeObjects struct {
	sa     *corev1.ServiceAccount
	secret *corev1.Secret
	svc    *corev1.Service
	dep    *appsv1.Deployment
	pdb    *policyv1.PodDisruptionBudget
}

func (e *env) objects(ns string) edgeObjects {
	e.t.Helper()
	var o edgeObjects
	get := func(err error) {
		e.t.Helper()
		if err != nil && !apierrors.IsNotFound(err) {
			e.t.Fatal(err)
		}
	}
	var err error
	core := e.client.CoreV1()
	o.sa, err = core.ServiceAccounts(ns).Get(e.ctx, kubecontract.EdgeName, metav1.GetOptions{})
	get(err)
	if err != nil {
		o.sa = nil
	}
	o.secret, err = core.Secrets(ns).Get(e.ctx, kubecontract.PullSecretName, metav1.GetOptions{})
	get(err)
	if err != nil {
		o.secret = nil
	}
	o.svc, err = core.Services(ns).Get(e.ctx, kubecontract.EdgeName, metav1.GetOptions{})
	get(err)
	if err != nil {
		o.svc = nil
	}
	o.dep, err = e.client.AppsV1().Deployments(ns).Get(e.ctx, kubecontract.EdgeName, metav1.GetOptions{})
	get(err)
	if err != nil {
		o.dep = nil
	}
	o.pdb, err = e.client.PolicyV1().PodDisruptionBudgets(ns).Get(e.ctx, kubecontract.EdgeName, metav1.GetOptions{})
	get(err)
	if err != nil {
		o.pdb = nil
	}
	return o
}

func (o edgeObjects) count() int {
	n := 0
	for _, present := range []bool{o.sa != nil, o.secret != nil, o.svc != nil, o.dep != nil, o.pdb != nil} {
		if present {
			n++
		}
	}
	return n
}

// pull parses the pull Secret and checks its host follows the Service.
func (o edgeObjects) pull(t *testing.T) (host, token string) {
	t.Helper()
	if o.secret == nil || o.svc == nil {
		t.Fatalf("secret %v, service %v: want both", o.secret != nil, o.svc != nil)
	}
	host, token, err := ParsePullSecret(o.secret)
	if err != nil {
		t.Fatal(err)
	}
	if want := EdgeHost(o.svc.Spec.Ports[0].NodePort); host != want {
		t.Fatalf("pull secret host %s, want %s (the Service's node port)", host, want)
	}
	return host, token
}
