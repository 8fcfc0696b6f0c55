package e2e

// The set-up of the Kubernetes tests (docs/kubernetes.md,
// injector/README.md, docs/security.md): a real kube-apiserver + etcd, the
// control plane's RBAC from deploy/rbac.yaml, the control plane binary in
// in-cluster mode running with its ServiceAccount's token (so a missing RBAC
// rule fails a test), and Debian's docker-registry as the upstream `test`. No
// kubelet or controller-manager runs: the tests create the `default`
// ServiceAccount and play the endpoints controller for the edge Service.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

const (
	releaseNS    = "selfhost-system"
	edgeAudience = "k8s-selfhost-repo-controlplane"
	// kubeTimeout bounds waits for the controller and informers: they act
	// in milliseconds, the margin is for a loaded 2-core runner.
	kubeTimeout = 60 * time.Second
)

type kubeEnv struct {
	kube       *harness.Kube
	reg        *harness.Registry
	img        harness.Image
	kubeconfig string // the control plane's ServiceAccount
	adminToken string // a ServiceAccount bound to k8s-selfhost-repo-admin
	config     string
}

func newKubeEnv(t *testing.T) *kubeEnv {
	t.Helper()
	e := &kubeEnv{kube: harness.StartKube(t)}
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	e.kube.ApplyFile(t, filepath.Join(root, "deploy", "rbac.yaml"))
	e.kubeconfig = e.kube.KubeconfigFor(t, "controlplane",
		e.kube.ServiceAccountToken(t, releaseNS, "selfhost-controlplane", nil, time.Hour))

	// An operator: a ServiceAccount bound to the admin ClusterRole.
	e.adminToken = e.kube.ServiceAccountToken(t, releaseNS, "ops", nil, time.Hour)
	_, err = e.kube.Client.RbacV1().ClusterRoleBindings().Create(context.Background(), &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "ops-selfhost-admin"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "k8s-selfhost-repo-admin"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "ops", Namespace: releaseNS}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("bind ops: %v", err)
	}

	e.reg = harness.StartDockerRegistry(t)
	e.img = harness.PushImage(t, e.reg.Addr, "team/app", "v1", "application/vnd.oci.image.manifest.v1+json", 2, 64<<10)
	e.config = fmt.Sprintf(`upstreams:
  - {prefix: dockerhub, url: "https://registry-1.docker.io", hosts: [docker.io, index.docker.io]}
  - {prefix: ghcr, url: "https://ghcr.io"}
  - {prefix: test, url: %q, hosts: [registry.test.internal]}
`, e.reg.URL)
	return e
}

// startControlPlane starts one replica with short leader-election timings
// (so a failover test takes seconds) and args added.
func (e *kubeEnv) startControlPlane(t *testing.T, pod string, args ...string) *harness.ControlPlane {
	t.Helper()
	return harness.StartControlPlaneInCluster(t, e.kubeconfig, e.config, append([]string{
		"--namespace", releaseNS, "--pod-name", pod,
		"--edge-image", "registry.invalid/selfhost/edge:e2e",
		"--edge-control-plane", "selfhost-controlplane." + releaseNS + ".svc:9090",
		"--leader-lease-duration", "4s", "--leader-renew-deadline", "3s", "--leader-retry-period", "500ms",
		"--debounce", "10ms",
	}, args...)...)
}

// labelNamespace creates (or updates) namespace ns with the opt-in label
// set to value ("" removes it), plus its default ServiceAccount.
func (e *kubeEnv) labelNamespace(t *testing.T, ns, value string) {
	t.Helper()
	ctx := context.Background()
	c := e.kube.Client.CoreV1().Namespaces()
	cur, err := c.Get(ctx, ns, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		cur, err = c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err == nil {
			_, err = e.kube.Client.CoreV1().ServiceAccounts(ns).Create(ctx,
				&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
		}
	}
	if err != nil {
		t.Fatalf("namespace %s: %v", ns, err)
	}
	if cur.Labels == nil {
		cur.Labels = map[string]string{}
	}
	if value == "" {
		delete(cur.Labels, kubecontract.OptInLabel)
	} else {
		cur.Labels[kubecontract.OptInLabel] = value
	}
	if _, err := c.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("label namespace %s: %v", ns, err)
	}
}

// edgeObjects is what the controller made in one namespace.
type edgeObjects struct {
	sa       *corev1.ServiceAccount
	svc      *corev1.Service
	secret   *corev1.Secret
	nodePort int32
	token    string
}

// waitEdgeObjects waits until all four edge objects exist in ns and the
// pull Secret names the Service's node port.
func (e *kubeEnv) waitEdgeObjects(t *testing.T, ns string) edgeObjects {
	t.Helper()
	ctx := context.Background()
	var o edgeObjects
	var why string
	waitUntil(t, "edge objects in "+ns, kubeTimeout, func() bool {
		var err error
		c := e.kube.Client.CoreV1()
		if o.sa, err = c.ServiceAccounts(ns).Get(ctx, kubecontract.EdgeName, metav1.GetOptions{}); err != nil {
			why = err.Error()
			return false
		}
		if _, err = e.kube.Client.AppsV1().Deployments(ns).Get(ctx, kubecontract.EdgeName, metav1.GetOptions{}); err != nil {
			why = err.Error()
			return false
		}
		if o.svc, err = c.Services(ns).Get(ctx, kubecontract.EdgeName, metav1.GetOptions{}); err != nil || len(o.svc.Spec.Ports) == 0 {
			why = fmt.Sprint("service: ", err)
			return false
		}
		o.nodePort = o.svc.Spec.Ports[0].NodePort
		if o.secret, err = c.Secrets(ns).Get(ctx, kubecontract.PullSecretName, metav1.GetOptions{}); err != nil {
			why = err.Error()
			return false
		}
		var cfg struct {
			Auths map[string]struct{ Password string } `json:"auths"`
		}
		if err := json.Unmarshal(o.secret.Data[corev1.DockerConfigJsonKey], &cfg); err != nil {
			why = err.Error()
			return false
		}
		a, ok := cfg.Auths[fmt.Sprintf("127.0.0.1:%d", o.nodePort)]
		o.token = a.Password
		why = fmt.Sprintf("pull secret hosts %v, node port %d", cfg.Auths, o.nodePort)
		return ok && o.token != ""
	}, func() string { return why })
	return o
}

// waitEdgeObjectsGone waits until none of the controller's objects is
// left in ns.
func (e *kubeEnv) waitEdgeObjectsGone(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	sel := metav1.ListOptions{LabelSelector: kubecontract.ManagedByLabel + "=" + kubecontract.ManagedByValue}
	var left []string
	waitUntil(t, "edge objects removed from "+ns, kubeTimeout, func() bool {
		left = nil
		c := e.kube.Client.CoreV1()
		if l, err := c.ServiceAccounts(ns).List(ctx, sel); err == nil && len(l.Items) > 0 {
			left = append(left, "serviceaccount")
		}
		if l, err := c.Services(ns).List(ctx, sel); err == nil && len(l.Items) > 0 {
			left = append(left, "service")
		}
		if l, err := c.Secrets(ns).List(ctx, sel); err == nil && len(l.Items) > 0 {
			left = append(left, "secret")
		}
		if l, err := e.kube.Client.AppsV1().Deployments(ns).List(ctx, sel); err == nil && len(l.Items) > 0 {
			left = append(left, "deployment")
		}
		return len(left) == 0
	}, func() string { return strings.Join(left, ", ") })
}

// markEdgeReady plays the endpoints controller: a ready EndpointSlice for
// the edge Service, so the injector rewrites to it.
func (e *kubeEnv) markEdgeReady(t *testing.T, ns string) {
	t.Helper()
	ready := true
	_, err := e.kube.Client.DiscoveryV1().EndpointSlices(ns).Create(context.Background(), &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: kubecontract.EdgeName + "-e2e", Labels: map[string]string{discoveryv1.LabelServiceName: kubecontract.EdgeName}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.5"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Port: ptr(int32(5000))}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("endpointslice in %s: %v", ns, err)
	}
}

func ptr[T any](v T) *T { return &v }

// testPod has two containers and an init container.
func testPod(name string, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init", Image: "busybox"}},
			Containers: []corev1.Container{
				{Name: "web", Image: "nginx:latest"},
				{Name: "app", Image: "ghcr.io/org/app@sha256:" + strings.Repeat("ab", 32)},
				{Name: "own", Image: "registry.example.com/x/y:1"},
			},
		},
	}
}

// createPod creates pod in ns (dryRun: the webhook runs, nothing is
// stored) and returns what the apiserver admitted and its warnings.
func (e *kubeEnv) createPod(t *testing.T, ns string, pod *corev1.Pod, dryRun bool) *corev1.Pod {
	t.Helper()
	opts := metav1.CreateOptions{}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	got, err := e.kube.Client.CoreV1().Pods(ns).Create(context.Background(), pod, opts)
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, pod.Name, err)
	}
	return got
}

// waitUntil polls cond every 50 ms until it holds or timeout passes.
func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool, detail func() string) {
	t.Helper()
	testkit.WaitFor(t, what, timeout, func() error {
		switch {
		case cond():
			return nil
		case detail != nil:
			return errors.New(detail())
		default:
			return errors.New("not yet")
		}
	})
}
