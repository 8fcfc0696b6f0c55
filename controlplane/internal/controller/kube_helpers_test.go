package controller

import (
	"context"
	"log/slog"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/leader"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

const releaseNS = "selfhost-system"

// controlPlaneClient returns a client of ServiceAccount releaseNS/name
// bound to exactly PolicyRules (cluster-wide) and leader.PolicyRules (in
// releaseNS): the tests prove those rules are enough.
func controlPlaneClient(t *testing.T, k *harness.Kube, name string) kubernetes.Interface {
	t.Helper()
	ctx := t.Context()
	token := k.ServiceAccountToken(t, releaseNS, name, nil, 0)
	rbac := k.Client.RbacV1()
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: releaseNS, Name: name}}
	create := func(err error) {
		t.Helper()
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	_, err := rbac.ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: PolicyRules()}, metav1.CreateOptions{})
	create(err)
	_, err = rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name}, Subjects: subject,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
	}, metav1.CreateOptions{})
	create(err)
	_, err = rbac.Roles(releaseNS).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: leader.PolicyRules(kubecontract.LeaseName),
	}, metav1.CreateOptions{})
	create(err)
	_, err = rbac.RoleBindings(releaseNS).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: releaseNS, Name: name}, Subjects: subject,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
	}, metav1.CreateOptions{})
	create(err)
	client := k.ClientFor(t, token)
	// RBAC reaches the authorizer through its informers: wait for it.
	waitFor(t, "RBAC for "+name, func() bool {
		_, err := client.AppsV1().Deployments("").List(ctx, metav1.ListOptions{Limit: 1,
			FieldSelector: fields.OneTermEqualSelector("metadata.name", kubecontract.EdgeName).String()})
		return err == nil
	})
	return client
}

// kubeController is a controller on a real apiserver with its informers
// started; Run is started and stopped by the test (a leader's term).
type kubeController struct {
	t      *testing.T
	admin  kubernetes.Interface
	c      *Controller
	logs   *testkit.LogBuffer
	stopFn func()
}

func startKubeController(t *testing.T, k *harness.Kube, client kubernetes.Interface, opts ...Option) *kubeController {
	t.Helper()
	ctx := t.Context()
	logs := &testkit.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	t.Cleanup(b.Shutdown)
	rec := b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "selfhost-controlplane"})
	inf := NewInformers(client, 0)
	c, err := New(client, inf, testTemplate(), log, append([]Option{WithEventRecorder(rec)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	inf.Start(ctx.Done())
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			t.Logf("controller log:\n%s", logs)
		}
	})
	return &kubeController{t: t, admin: k.Client, c: c, logs: logs}
}

// run starts Run; stop ends it and waits for it to return.
func (kc *kubeController) run() {
	kc.t.Helper()
	ctx, cancel := context.WithCancel(kc.t.Context())
	done := make(chan error, 1)
	go func() { done <- kc.c.Run(ctx) }()
	kc.stopFn = func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				kc.t.Errorf("Run: %v", err)
			}
		case <-time.After(2 * time.Minute):
			kc.t.Fatal("Run did not return after its context ended")
		}
	}
	kc.t.Cleanup(kc.stop)
}

func (kc *kubeController) stop() {
	if kc.stopFn != nil {
		kc.stopFn()
		kc.stopFn = nil
	}
}

// running reports whether Run is between start and return.
func (c *Controller) running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queue != nil
}

// idle reports whether Run has nothing queued and nothing waiting for a
// retry among namespaces.
func (c *Controller) idle(namespaces ...string) bool {
	c.mu.Lock()
	q := c.queue
	c.mu.Unlock()
	if q == nil || q.Len() != 0 {
		return false
	}
	for _, ns := range namespaces {
		if q.NumRequeues(ns) != 0 {
			return false
		}
	}
	return true
}

func objectsOf(t *testing.T, client kubernetes.Interface, ns string) edgeObjects {
	t.Helper()
	ctx := t.Context()
	var o edgeObjects
	keep := func(err error) bool {
		t.Helper()
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
		return err == nil
	}
	core := client.CoreV1()
	if sa, err := core.ServiceAccounts(ns).Get(ctx, kubecontract.EdgeName, metav1.GetOptions{}); keep(err) {
		o.sa = sa
	}
	if s, err := core.Secrets(ns).Get(ctx, kubecontract.PullSecretName, metav1.GetOptions{}); keep(err) {
		o.secret = s
	}
	if s, err := core.Services(ns).Get(ctx, kubecontract.EdgeName, metav1.GetOptions{}); keep(err) {
		o.svc = s
	}
	if d, err := client.AppsV1().Deployments(ns).Get(ctx, kubecontract.EdgeName, metav1.GetOptions{}); keep(err) {
		o.dep = d
	}
	if p, err := client.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, kubecontract.EdgeName, metav1.GetOptions{}); keep(err) {
		o.pdb = p
	}
	return o
}

func createNamespace(t *testing.T, client kubernetes.Interface, ns *corev1.Namespace) {
	t.Helper()
	if _, err := client.CoreV1().Namespaces().Create(t.Context(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// editNamespace applies edit to namespace name, retrying on conflicts.
func editNamespace(t *testing.T, client kubernetes.Interface, name string, edit func(*corev1.Namespace)) {
	t.Helper()
	ctx := t.Context()
	for {
		ns, err := client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		edit(ns)
		_, err = client.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{})
		if err == nil {
			return
		}
		if !apierrors.IsConflict(err) {
			t.Fatal(err)
		}
	}
}

// edgeReady reports whether all five objects of ns exist and the pull
// Secret follows the Service.
func edgeReady(t *testing.T, client kubernetes.Interface, ns string) bool {
	o := objectsOf(t, client, ns)
	if o.count() != 5 || len(o.svc.Spec.Ports) != 1 {
		return false
	}
	host, _, err := ParsePullSecret(o.secret)
	return err == nil && host == EdgeHost(o.svc.Spec.Ports[0].NodePort)
}
