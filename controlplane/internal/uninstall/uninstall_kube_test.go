package uninstall

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config/configmapstate"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/controller"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/leader"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/webhookconfig"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

const (
	releaseNS = "selfhost-system"
	saName    = "selfhost-controlplane"
)

var cpSelector = map[string]string{"app.kubernetes.io/name": "k8s-selfhost-repo", "app.kubernetes.io/component": "controlplane"}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, what, 60*time.Second, cond)
}

// TestKubeUninstall runs the real controller under leader election, the
// webhook keeper and the state store against a real kube-apiserver, then
// Run as the control plane's ServiceAccount holding exactly
// controller.PolicyRules, leader.PolicyRules and this package's rules: it
// waits for the control plane's pods, then leaves none of the control
// plane's objects anywhere and touches nothing else.
func TestKubeUninstall(t *testing.T) {
	t.Parallel()
	k := harness.StartKube(t)
	ctx := t.Context()
	admin := k.Client
	client := serviceAccountClient(t, k)

	// What `helm install` made: the control plane's Deployment with a pod
	// (no kubelet here: the pod object stands for a running replica), a
	// chart ConfigMap. And a tenant's own Secret next to its edge.
	dep, err := admin.AppsV1().Deployments(releaseNS).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: DefaultDeployment, Labels: map[string]string{kubecontract.ManagedByLabel: "Helm"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: cpSelector},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: cpSelector},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "controlplane", Image: "controlplane"}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, func() error {
		_, err := admin.CoreV1().Pods(releaseNS).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "selfhost-controlplane-0", Labels: cpSelector},
			Spec: corev1.PodSpec{ServiceAccountName: saName, AutomountServiceAccountToken: ptr.To(false),
				Containers: []corev1.Container{{Name: "controlplane", Image: "controlplane"}}},
		}, metav1.CreateOptions{})
		return err
	})
	chartCM := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "selfhost-controlplane-config",
		Labels: map[string]string{kubecontract.ManagedByLabel: "Helm"}}}
	mustCreate(t, func() error {
		_, err := admin.CoreV1().ConfigMaps(releaseNS).Create(ctx, chartCM, metav1.CreateOptions{})
		return err
	})

	stopCP := startControlPlane(t, k, client)
	for _, ns := range []string{"team-a", "team-b"} {
		mustCreate(t, func() error {
			_, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
				Name: ns, Labels: map[string]string{kubecontract.OptInLabel: kubecontract.OptInValue}}}, metav1.CreateOptions{})
			return err
		})
	}
	userSecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "app-secret"}, StringData: map[string]string{"k": "v"}}
	mustCreate(t, func() error {
		_, err := admin.CoreV1().Secrets("team-a").Create(ctx, userSecret, metav1.CreateOptions{})
		return err
	})
	waitFor(t, "both edges (5 objects each), the webhook, the lease and the state", func() bool {
		return len(managed(t, admin)) == 2*5+2 && exists(admin.CoordinationV1().Leases(releaseNS).Get(ctx, kubecontract.LeaseName, metav1.GetOptions{})) &&
			exists(admin.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, DefaultWebhookConfiguration, metav1.GetOptions{}))
	})

	logs := &testkit.LogBuffer{}
	done := make(chan error, 1)
	var report Report
	go func() {
		var err error
		report, err = Run(ctx, Options{Client: client, Namespace: releaseNS, PollInterval: 50 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(logs, nil))})
		done <- err
	}()
	waitFor(t, "the control plane scaled to 0", func() bool {
		d, err := admin.AppsV1().Deployments(releaseNS).Get(ctx, dep.Name, metav1.GetOptions{})
		return err == nil && *d.Spec.Replicas == 0
	})
	waitFor(t, "Run waiting for the pod", func() bool { return logs.Count("waiting for the control plane's pods") > 0 })
	// Nothing is deleted while a replica could still recreate it.
	if n := len(managed(t, admin)); n != 2*5+2 {
		t.Fatalf("%d managed objects left while a control plane pod still runs, want all 12", n)
	}
	// The replica stops (its pod's SIGTERM: the elector releases the Lease)
	// and its pod goes.
	stopCP()
	if err := admin.CoreV1().Pods(releaseNS).Delete(ctx, "selfhost-controlplane-0", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v\n%s", err, logs)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("Run did not return\n%s", logs)
	}

	if left := managed(t, admin); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
	if exists(admin.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, DefaultWebhookConfiguration, metav1.GetOptions{})) {
		t.Error("the webhook configuration is left")
	}
	if exists(admin.CoreV1().Secrets(releaseNS).Get(ctx, DefaultWebhookSecret, metav1.GetOptions{})) {
		t.Error("the webhook TLS Secret is left")
	}
	if exists(admin.CoordinationV1().Leases(releaseNS).Get(ctx, kubecontract.LeaseName, metav1.GetOptions{})) {
		t.Error("the Lease is left")
	}
	if !exists(admin.CoreV1().Secrets("team-a").Get(ctx, userSecret.Name, metav1.GetOptions{})) ||
		!exists(admin.CoreV1().ConfigMaps(releaseNS).Get(ctx, chartCM.Name, metav1.GetOptions{})) ||
		!exists(admin.AppsV1().Deployments(releaseNS).Get(ctx, dep.Name, metav1.GetOptions{})) {
		t.Error("Run deleted an object that is not the control plane's (a tenant Secret, or a chart object Helm deletes)")
	}
	for _, want := range []string{"mutatingwebhookconfiguration " + DefaultWebhookConfiguration, "deployment team-a/selfhost-edge",
		"poddisruptionbudget team-b/selfhost-edge", "configmap " + releaseNS + "/" + configmapstate.DefaultName,
		"secret " + releaseNS + "/" + DefaultWebhookSecret, "lease " + releaseNS + "/" + kubecontract.LeaseName} {
		if !slices.Contains(report.Deleted, want) {
			t.Errorf("report %q lacks %q", report.Deleted, want)
		}
	}
	if !strings.Contains(logs.String(), "uninstall cleanup done") {
		t.Errorf("log:\n%s", logs)
	}

	// Idempotent: a retried hook finds nothing and succeeds.
	again, err := Run(ctx, Options{Client: client, Namespace: releaseNS})
	if err != nil || len(again.Deleted) != 0 {
		t.Fatalf("second Run: %v, deleted %q", err, again.Deleted)
	}
}

// managed lists every object labelled as the control plane's, by
// "kind ns/name".
func managed(t *testing.T, c kubernetes.Interface) []string {
	t.Helper()
	r := &run{o: Options{Client: c}}
	var out []string
	for _, k := range r.kinds() {
		objs, err := k.list(t.Context(), k.listOptions())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			out = append(out, k.name+" "+o.meta.Namespace+"/"+o.meta.Name)
		}
	}
	// The release namespace's, by name.
	managedBy := func(m metav1.Object) bool { return ManagedSelector().Matches(labels.Set(m.GetLabels())) }
	if cm, err := c.CoreV1().ConfigMaps(releaseNS).Get(t.Context(), configmapstate.DefaultName, metav1.GetOptions{}); err == nil && managedBy(cm) {
		out = append(out, "configmap "+releaseNS+"/"+cm.Name)
	}
	for _, name := range []string{configmapstate.DefaultSecretName, DefaultWebhookSecret} {
		if s, err := c.CoreV1().Secrets(releaseNS).Get(t.Context(), name, metav1.GetOptions{}); err == nil && managedBy(s) {
			out = append(out, "secret "+releaseNS+"/"+s.Name)
		}
	}
	return out
}

func exists[T any](_ T, err error) bool { return err == nil }

func mustCreate(t *testing.T, create func() error) {
	t.Helper()
	if err := create(); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// serviceAccountClient is the control plane's ServiceAccount bound to
// exactly the Go rules that deploy/rbac.yaml carries for it.
func serviceAccountClient(t *testing.T, k *harness.Kube) kubernetes.Interface {
	t.Helper()
	ctx := t.Context()
	token := k.ServiceAccountToken(t, releaseNS, saName, nil, 0)
	rbac := k.Client.RbacV1()
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: releaseNS, Name: saName}}
	cluster := append(controller.PolicyRules(), ClusterPolicyRules(DefaultWebhookConfiguration)...)
	ns := append(leader.PolicyRules(kubecontract.LeaseName), NamespacePolicyRules(Options{})...)
	ns = append(ns, configmapstate.PolicyRules()...)
	mustCreate(t, func() error {
		_, err := rbac.ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: saName}, Rules: cluster}, metav1.CreateOptions{})
		return err
	})
	mustCreate(t, func() error {
		_, err := rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: saName}, Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: saName}}, metav1.CreateOptions{})
		return err
	})
	mustCreate(t, func() error {
		_, err := rbac.Roles(releaseNS).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: saName}, Rules: ns}, metav1.CreateOptions{})
		return err
	})
	mustCreate(t, func() error {
		_, err := rbac.RoleBindings(releaseNS).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: saName}, Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: saName}}, metav1.CreateOptions{})
		return err
	})
	client := k.ClientFor(t, token)
	waitFor(t, "RBAC of the ServiceAccount", func() bool {
		_, err1 := client.CoreV1().Pods(releaseNS).List(ctx, metav1.ListOptions{Limit: 1})
		_, err2 := client.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{Limit: 1,
			FieldSelector: fields.OneTermEqualSelector("metadata.name", controller.CAConfigMapName).String()})
		return err1 == nil && err2 == nil
	})
	return client
}

// startControlPlane runs what a control plane replica runs against the
// apiserver: the controller under leader election and the state store as
// the ServiceAccount, and the webhook keeper (as admin: its rules are not
// under test here). The returned stop ends them as a SIGTERM would.
func startControlPlane(t *testing.T, k *harness.Kube, client kubernetes.Interface) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	keeper, err := webhookconfig.New(k.Client, webhookconfig.Options{Namespace: releaseNS, URL: "https://127.0.0.1:9/mutate-pods"})
	if err != nil {
		t.Fatal(err)
	}
	if err := keeper.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	state, err := configmapstate.New(client, configmapstate.Options{Namespace: releaseNS})
	if err != nil {
		t.Fatal(err)
	}
	if err := state.Write(ctx, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	inf := controller.NewInformers(client, 0)
	ctl, err := controller.New(client, inf, controller.EdgeTemplate{
		Image: "registry.example/edge:v1", ControlPlaneAddress: "selfhost-controlplane.selfhost-system.svc:9090", TokenAudience: "a",
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	inf.Start(ctx.Done())
	e, err := leader.New(client, releaseNS, kubecontract.LeaseName, nil, leader.WithPodName("selfhost-controlplane-0"),
		leader.WithTimings(2*time.Second, time.Second, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := e.Run(ctx, func(ctx context.Context) { _ = ctl.Run(ctx) }); err != nil {
			t.Errorf("elector: %v", err)
		}
	}()
	stop = sync.OnceFunc(func() {
		cancel()
		<-done
		inf.Shutdown()
	})
	t.Cleanup(stop)
	return stop
}
