//go:build bench

package kube

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

const (
	release  = "selfhost-system"
	cpSA     = "selfhost-controlplane"
	edgeImg  = "registry.invalid/selfhost/edge:bench"
	cpConfig = `upstreams:
  - {prefix: dockerhub, url: "https://registry-1.docker.io", hosts: [docker.io, index.docker.io]}
  - {prefix: ghcr, url: "https://ghcr.io"}
`
)

// cluster is a kube-apiserver with the in-cluster control plane running
// as the chart's ServiceAccount.
type cluster struct {
	kube *harness.Kube
	cp   *harness.ControlPlane
}

// startCluster starts etcd, kube-apiserver and the control plane with
// --workers workers, and waits until the control plane leads (its
// namespace controller runs only then).
func startCluster(t *testing.T, workers int) *cluster {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	kube := harness.StartKube(t)
	kube.ApplyFile(t, filepath.Join(root, "deploy", "rbac.yaml"))
	token := kube.ServiceAccountToken(t, release, cpSA, nil, time.Hour)
	kubeconfig := kube.KubeconfigFor(t, cpSA, token)
	cp := harness.StartControlPlaneInCluster(t, kubeconfig, cpConfig,
		"--namespace", release, "--edge-image", edgeImg,
		"--edge-control-plane", "selfhost-controlplane.selfhost-system.svc:9090",
		"--workers", strconv.Itoa(workers),
		// The harness asks for debug; production runs at info.
		"--log-level", "info")
	c := &cluster{kube: kube, cp: cp}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		l, err := kube.Client.CoordinationV1().Leases(release).Get(ctx, kubecontract.LeaseName, metav1.GetOptions{})
		if err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" {
			break
		}
		if c.cp.Proc.Exited() {
			t.Fatalf("the control plane exited:\n%s", c.cp.Proc.LogTail(8<<10))
		}
		if ctx.Err() != nil {
			t.Fatalf("the control plane never took the lease %s/%s (last: %v)", release, kubecontract.LeaseName, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return c
}

// alive fails the test when the control plane has exited.
func (c *cluster) alive(t *testing.T) {
	t.Helper()
	if c.cp.Proc.Exited() {
		t.Fatalf("the control plane exited:\n%s", c.cp.Proc.LogTail(8<<10))
	}
}

// createNamespace creates ns (labelled when optIn) and its "default"
// ServiceAccount, which pods need and no controller-manager creates here.
func createNamespace(ctx context.Context, c kubernetes.Interface, ns string, optIn bool) error {
	var l map[string]string
	if optIn {
		l = map[string]string{kubecontract.OptInLabel: kubecontract.OptInValue}
	}
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: l}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %s: %w", ns, err)
	}
	if _, err := c.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create serviceaccount %s/default: %w", ns, err)
	}
	return nil
}

// edgeNodePort waits for the controller's edge Service in ns and returns
// its node port.
func edgeNodePort(ctx context.Context, c kubernetes.Interface, ns string) (int32, error) {
	for {
		svc, err := c.CoreV1().Services(ns).Get(ctx, kubecontract.EdgeName, metav1.GetOptions{})
		if err == nil && len(svc.Spec.Ports) > 0 && svc.Spec.Ports[0].NodePort != 0 {
			return svc.Spec.Ports[0].NodePort, nil
		}
		if err != nil && !apierrors.IsNotFound(err) {
			return 0, err
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("no Service %s/%s with a node port: %w", ns, kubecontract.EdgeName, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// markEdgeReady plays the endpoints controller: an EndpointSlice of the
// edge Service with one ready endpoint, which the injector requires before
// it rewrites.
func markEdgeReady(ctx context.Context, c kubernetes.Interface, ns string) error {
	ready := true
	port, proto, name := int32(5000), corev1.ProtocolTCP, "registry"
	_, err := c.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:   kubecontract.EdgeName + "-bench",
			Labels: map[string]string{discoveryv1.LabelServiceName: kubecontract.EdgeName},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.5"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}, metav1.CreateOptions{})
	return err
}

// --------------------------------------------------------------- watcher

// watcher records when each ServiceAccount, Secret, Service (once it has a
// node port) and Deployment was first seen through a watch, from informers
// of the benchmark's own admin client.
type watcher struct {
	mu      sync.Mutex
	first   map[string]time.Time // kind/namespace/name
	perNS   map[string]int       // objects first seen, per namespace
	count   int
	keep    func(ns, name string) bool
	changed chan struct{}
	stop    context.CancelFunc
}

// startWatcher watches the four kinds across namespaces; selector ("" for
// all) narrows the lists, keep (nil for all) the objects recorded.
func startWatcher(t *testing.T, client kubernetes.Interface, selector string, keep func(ns, name string) bool) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{first: map[string]time.Time{}, perNS: map[string]int{}, keep: keep, changed: make(chan struct{}, 1), stop: cancel}
	f := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
	handler := func(kind string) cache.ResourceEventHandlerFuncs {
		see := func(obj any) {
			now := time.Now()
			m, err := metaOf(obj)
			if err != nil {
				return
			}
			if svc, ok := obj.(*corev1.Service); ok && (len(svc.Spec.Ports) == 0 || svc.Spec.Ports[0].NodePort == 0) {
				return
			}
			w.saw(kind, m.GetNamespace(), m.GetName(), now)
		}
		return cache.ResourceEventHandlerFuncs{AddFunc: see, UpdateFunc: func(_, o any) { see(o) }}
	}
	var synced []cache.InformerSynced
	for kind, inf := range map[string]cache.SharedIndexInformer{
		"serviceaccount": f.Core().V1().ServiceAccounts().Informer(),
		"secret":         f.Core().V1().Secrets().Informer(),
		"service":        f.Core().V1().Services().Informer(),
		"deployment":     f.Apps().V1().Deployments().Informer(),
	} {
		if _, err := inf.AddEventHandler(handler(kind)); err != nil {
			t.Fatal(err)
		}
		synced = append(synced, inf.HasSynced)
	}
	f.Start(ctx.Done())
	t.Cleanup(func() { cancel(); f.Shutdown() })
	sctx, scancel := context.WithTimeout(ctx, time.Minute)
	defer scancel()
	if !cache.WaitForCacheSync(sctx.Done(), synced...) {
		t.Fatal("watcher: informers did not sync")
	}
	return w
}

func metaOf(obj any) (metav1.Object, error) {
	switch o := obj.(type) {
	case *corev1.ServiceAccount:
		return o, nil
	case *corev1.Secret:
		return o, nil
	case *corev1.Service:
		return o, nil
	case *appsv1.Deployment:
		return o, nil
	}
	return nil, errors.New("unexpected kind")
}

func (w *watcher) saw(kind, ns, name string, at time.Time) {
	if w.keep != nil && !w.keep(ns, name) {
		return
	}
	key := kind + "/" + ns + "/" + name
	w.mu.Lock()
	if _, ok := w.first[key]; !ok {
		w.first[key] = at
		w.perNS[ns]++
		w.count++
	}
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// edgeKeys are the four objects of a namespace's edge.
var edgeKeys = []string{
	"serviceaccount/%s/" + kubecontract.EdgeName,
	"deployment/%s/" + kubecontract.EdgeName,
	"service/%s/" + kubecontract.EdgeName,
	"secret/%s/" + kubecontract.PullSecretName,
}

// waitKeys waits until every key (with %s replaced by ns) was seen and
// returns the latest first-seen time among them.
func (w *watcher) waitKeys(ctx context.Context, ns string, keys []string) (time.Time, error) {
	for {
		var last time.Time
		missing := ""
		w.mu.Lock()
		for _, k := range keys {
			k = fmt.Sprintf(k, ns)
			at, ok := w.first[k]
			if !ok {
				missing = k
				break
			}
			if at.After(last) {
				last = at
			}
		}
		w.mu.Unlock()
		if missing == "" {
			return last, nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("%s never appeared: %w", missing, ctx.Err())
		case <-w.changed:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// complete is how many namespaces have all four objects.
func (w *watcher) complete() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, c := range w.perNS {
		if c >= len(edgeKeys) {
			n++
		}
	}
	return n
}

// counts is how many objects were seen and the latest first-seen time.
func (w *watcher) counts() (n int, last time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, at := range w.first {
		if at.After(last) {
			last = at
		}
	}
	return w.count, last
}

// --------------------------------------------------- baseline edge objects

// baselineLabels mark the objects the benchmark creates itself; they do
// not carry the managed-by label, so the controller never sees them.
var baselineLabels = map[string]string{"bench.k8s-selfhost-repo.io/baseline": "true"}

// createEdgeLike creates, one after another like the controller, four
// objects shaped like an edge's: ServiceAccount, NodePort Service, pull
// Secret, Deployment.
func createEdgeLike(ctx context.Context, c kubernetes.Interface, ns string) error {
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: ns, Labels: baselineLabels}
	}
	if _, err := c.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: meta(kubecontract.EdgeName)}, metav1.CreateOptions{}); err != nil {
		return err
	}
	svc, err := c.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: meta(kubecontract.EdgeName),
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeNodePort,
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyCluster,
			Selector:              map[string]string{"app": "bench-baseline"},
			Ports:                 []corev1.ServicePort{{Name: "registry", Port: 5000, TargetPort: intstr.FromInt32(5000)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	host := fmt.Sprintf("127.0.0.1:%d", svc.Spec.Ports[0].NodePort)
	if _, err := c.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: meta(kubecontract.PullSecretName),
		Type:       corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: fmt.Appendf(nil,
			`{"auths":{%q:{"username":"selfhost","password":"0123456789abcdef0123456789abcdef"}}}`, host)},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	one := int32(1)
	sel := map[string]string{"app": "bench-baseline"}
	_, err = c.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: meta(kubecontract.EdgeName),
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: sel},
				Spec: corev1.PodSpec{
					ServiceAccountName: kubecontract.EdgeName,
					Containers:         []corev1.Container{{Name: "edge", Image: edgeImg, Args: []string{"--listen", ":5000"}}},
				},
			},
		},
	}, metav1.CreateOptions{})
	return err
}

// managedSelector selects the controller's edge objects.
var managedSelector = labels.SelectorFromSet(labels.Set{
	kubecontract.ManagedByLabel: kubecontract.ManagedByValue,
	kubecontract.ComponentLabel: kubecontract.EdgeComponent,
}).String()
