package e2e

// The chart's uninstall hook, its edge availability values and its
// optional NetworkPolicy (charts/README.md, docs/kubernetes.md
// "Uninstalling" and "Network requirements").

import (
	"context"
	"fmt"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

const cleanupJob = chartName + "-cleanup"

func TestChartHooksAndPolicies(t *testing.T) {
	t.Parallel()
	h := newHelm(t)

	t.Run("lint with the network policy", func(t *testing.T) {
		if _, err := h.run("lint", "--strict", h.chart, "--kube-version", chartKubeVersion,
			"--set", "networkPolicy.enabled=true,networkPolicy.apiServerCIDRs={10.0.0.0/24}"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("cleanup hook", func(t *testing.T) {
		docs := h.template(t)
		job := decodeDoc[batchv1.Job](t, docs, "Job/"+cleanupJob)
		if got := job.Annotations["helm.sh/hook"]; got != "pre-delete" {
			t.Errorf("hook %q, want pre-delete (runs while the RBAC still exists)", got)
		}
		if got := job.Annotations["helm.sh/hook-delete-policy"]; got != "before-hook-creation,hook-succeeded" {
			t.Errorf("hook delete policy %q", got)
		}
		if d := job.Spec.ActiveDeadlineSeconds; d == nil || *d != 240 {
			t.Errorf("activeDeadlineSeconds %v, want 240 (180 s cleanup + 60 s start-up, under helm's 5m)", d)
		}
		ps := job.Spec.Template.Spec
		if ps.ServiceAccountName != chartName || ps.RestartPolicy != corev1.RestartPolicyNever {
			t.Errorf("service account %q restart %q", ps.ServiceAccountName, ps.RestartPolicy)
		}
		c := ps.Containers[0]
		if want := []string{"cleanup", "--deployment=" + chartName, "--timeout=180s"}; !slices.Equal(c.Args, want) {
			t.Errorf("args %q, want %q", c.Args, want)
		}
		dep := decodeDoc[appsv1.Deployment](t, docs, "Deployment/"+chartName)
		if c.Image != dep.Spec.Template.Spec.Containers[0].Image {
			t.Errorf("cleanup image %s, want the control plane's %s", c.Image, dep.Spec.Template.Spec.Containers[0].Image)
		}
		sel, err := metav1.LabelSelectorAsSelector(dep.Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		if sel.Matches(labels.Set(job.Spec.Template.Labels)) {
			t.Errorf("the cleanup pod %v matches the control plane's selector %s: it would wait for itself", job.Spec.Template.Labels, sel)
		}
		if sc := c.SecurityContext; sc == nil || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation {
			t.Errorf("security context %+v", sc)
		}
		if !slices.Contains(dep.Spec.Template.Spec.Containers[0].Args, "--edge-replicas=2") {
			t.Errorf("control plane args %q lack --edge-replicas=2", dep.Spec.Template.Spec.Containers[0].Args)
		}
		if _, ok := docs["NetworkPolicy/"+chartName]; ok {
			t.Error("a NetworkPolicy is rendered by default")
		}

		docs = h.template(t, "cleanup.enabled=false,cleanup.timeoutSeconds=600,edge.replicas=3")
		if _, ok := docs["Job/"+cleanupJob]; ok {
			t.Error("cleanup.enabled=false still renders the hook")
		}
		dep = decodeDoc[appsv1.Deployment](t, docs, "Deployment/"+chartName)
		if !slices.Contains(dep.Spec.Template.Spec.Containers[0].Args, "--edge-replicas=3") {
			t.Errorf("args %q lack --edge-replicas=3", dep.Spec.Template.Spec.Containers[0].Args)
		}
	})

	t.Run("network policy", func(t *testing.T) {
		docs := h.template(t, "networkPolicy.enabled=true,networkPolicy.apiServerCIDRs={10.0.0.0/24,fd00::/64}",
			"networkPolicy.extraIngress[0].ports[0].port=9091")
		np := decodeDoc[networkingv1.NetworkPolicy](t, docs, "NetworkPolicy/"+chartName)
		dep := decodeDoc[appsv1.Deployment](t, docs, "Deployment/"+chartName)
		if !reflect.DeepEqual(np.Spec.PodSelector.MatchLabels, dep.Spec.Selector.MatchLabels) {
			t.Errorf("policy selects %v, the control plane is %v", np.Spec.PodSelector.MatchLabels, dep.Spec.Selector.MatchLabels)
		}
		if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
			t.Errorf("policy types %v, want Ingress only", np.Spec.PolicyTypes)
		}
		if len(np.Spec.Ingress) != 3 {
			t.Fatalf("%d ingress rules, want edges, apiserver, extra", len(np.Spec.Ingress))
		}
		edges := np.Spec.Ingress[0]
		wantEdges := map[string]string{"app.kubernetes.io/name": "selfhost-edge", "app.kubernetes.io/component": "edge"}
		if len(edges.From) != 1 || edges.From[0].NamespaceSelector == nil || len(edges.From[0].NamespaceSelector.MatchLabels) != 0 ||
			!reflect.DeepEqual(edges.From[0].PodSelector.MatchLabels, wantEdges) || edges.Ports[0].Port.IntValue() != 9090 {
			t.Errorf("edge rule %+v: want edge pods of every namespace on 9090", edges)
		}
		api := np.Spec.Ingress[1]
		var cidrs []string
		for _, p := range api.From {
			cidrs = append(cidrs, p.IPBlock.CIDR)
		}
		if api.Ports[0].Port.IntValue() != 8443 || !slices.Equal(cidrs, []string{"10.0.0.0/24", "fd00::/64"}) {
			t.Errorf("apiserver rule %+v", api)
		}
		if p := np.Spec.Ingress[2].Ports[0].Port; *p != intstr.FromInt32(9091) {
			t.Errorf("extra rule %+v", np.Spec.Ingress[2])
		}

		docs = h.template(t, "networkPolicy.enabled=true,webhook.enabled=false")
		np = decodeDoc[networkingv1.NetworkPolicy](t, docs, "NetworkPolicy/"+chartName)
		if len(np.Spec.Ingress) != 1 {
			t.Errorf("webhook disabled: %d rules, want the edges' only", len(np.Spec.Ingress))
		}
	})

	t.Run("schema", func(t *testing.T) {
		for _, tc := range []struct{ set, want string }{
			{"networkPolicy.enabeld=true", "enabeld"},
			{"networkPolicy.apiServerCIDRs={10.0.0.1}", "apiServerCIDRs"},
			{"cleanup.timeoutSeconds=5", "timeoutSeconds"},
			{"cleanup.enabled=yes", "enabled"},
			{"edge.replicas=0", "replicas"},
		} {
			_, err := h.run("template", "selfhost", h.chart, "--kube-version", chartKubeVersion, "--set", tc.set)
			if err == nil || !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("--set %s: got %v, want a schema error naming %q", tc.set, err, tc.want)
			}
		}
	})
}

// runChartCleanup runs the installed release's pre-delete hook the way
// kubelet would run its Job (there is no kubelet here): the Job from
// `helm get hooks`, its args and env, the control plane binary, the
// ServiceAccount's token. Then `helm uninstall --no-hooks` (the hook was
// just run by hand; with hooks helm would wait for a Job no kubelet runs)
// and checks that nothing of the release or the control plane is left.
func runChartCleanup(t *testing.T, h *helmCLI, kube *harness.Kube, tenants ...string) {
	t.Helper()
	ctx := context.Background()
	if before := managedObjects(t, kube.Client); len(before) < 5 {
		t.Fatalf("before the cleanup only %v: the test would prove nothing", before)
	}
	out, err := h.run("get", "hooks", "selfhost", "--namespace", releaseNS, "--kubeconfig", kube.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	job := decodeDoc[batchv1.Job](t, splitManifests(t, out), "Job/"+cleanupJob)
	c := job.Spec.Template.Spec.Containers[0]
	if job.Spec.Template.Spec.ServiceAccountName != chartName {
		t.Fatalf("hook runs as %q", job.Spec.Template.Spec.ServiceAccountName)
	}
	kubeconfig := kube.KubeconfigFor(t, "chart-cleanup", kube.ServiceAccountToken(t, releaseNS, chartName, nil, time.Hour))
	args := append(slices.Clone(c.Args), "--kubeconfig="+kubeconfig)
	var env []string
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env = append(env, e.Name+"="+releaseNS)
		default:
			t.Fatalf("env %s: a source this test cannot resolve", e.Name)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, harness.ControlPlaneBinary(t), args...)
	cmd.Env = env
	logs, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cleanup %q: %v\n%s", args, err, logs)
	}
	dep, err := kube.Client.AppsV1().Deployments(releaseNS).Get(ctx, chartName, metav1.GetOptions{})
	if err != nil || *dep.Spec.Replicas != 0 {
		t.Errorf("control plane Deployment after cleanup: %v, %v; want scaled to 0", dep, err)
	}
	if left := managedObjects(t, kube.Client); len(left) != 0 {
		t.Errorf("cleanup left %v\n%s", left, logs)
	}
	if _, err := kube.Client.CoordinationV1().Leases(releaseNS).Get(ctx, "k8s-selfhost-repo-controlplane", metav1.GetOptions{}); err == nil {
		t.Errorf("the Lease is left\n%s", logs)
	}

	// The hook ran above; helm would otherwise wait for its Job to finish,
	// and without a kubelet it never does.
	if _, err := h.run("uninstall", "selfhost", "--namespace", releaseNS, "--kubeconfig", kube.Kubeconfig, "--no-hooks"); err != nil {
		t.Fatal(err)
	}
	for _, ns := range append([]string{releaseNS}, tenants...) {
		if left := namespaceObjects(t, kube.Client, ns); len(left) != 0 {
			t.Errorf("namespace %s after helm uninstall: %v", ns, left)
		}
	}
	for _, get := range []func() error{
		func() error {
			_, err := kube.Client.RbacV1().ClusterRoles().Get(ctx, "k8s-selfhost-repo-controlplane", metav1.GetOptions{})
			return err
		},
		func() error {
			_, err := kube.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "k8s-selfhost-repo-injector", metav1.GetOptions{})
			return err
		},
	} {
		if err := get(); err == nil {
			t.Error("a cluster-scoped object is left after helm uninstall")
		}
	}
}

// managedObjects lists what carries the control plane's managed-by label,
// in every namespace.
func managedObjects(t *testing.T, c kubernetes.Interface) []string {
	t.Helper()
	ctx := context.Background()
	opts := metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=k8s-selfhost-repo-controlplane"}
	var out []string
	add := func(kind string, err error, metas ...metav1.ObjectMeta) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range metas {
			out = append(out, fmt.Sprintf("%s %s/%s", kind, m.Namespace, m.Name))
		}
	}
	deps, err := c.AppsV1().Deployments("").List(ctx, opts)
	add("deployment", err, metas(deps.Items, func(o appsv1.Deployment) metav1.ObjectMeta { return o.ObjectMeta })...)
	svcs, err := c.CoreV1().Services("").List(ctx, opts)
	add("service", err, metas(svcs.Items, func(o corev1.Service) metav1.ObjectMeta { return o.ObjectMeta })...)
	secs, err := c.CoreV1().Secrets("").List(ctx, opts)
	add("secret", err, metas(secs.Items, func(o corev1.Secret) metav1.ObjectMeta { return o.ObjectMeta })...)
	cms, err := c.CoreV1().ConfigMaps("").List(ctx, opts)
	add("configmap", err, metas(cms.Items, func(o corev1.ConfigMap) metav1.ObjectMeta { return o.ObjectMeta })...)
	sas, err := c.CoreV1().ServiceAccounts("").List(ctx, opts)
	add("serviceaccount", err, metas(sas.Items, func(o corev1.ServiceAccount) metav1.ObjectMeta { return o.ObjectMeta })...)
	pdbs, err := c.PolicyV1().PodDisruptionBudgets("").List(ctx, opts)
	add("poddisruptionbudget", err, metas(pdbs.Items, func(o policyv1.PodDisruptionBudget) metav1.ObjectMeta { return o.ObjectMeta })...)
	return out
}

func metas[T any](items []T, meta func(T) metav1.ObjectMeta) []metav1.ObjectMeta {
	out := make([]metav1.ObjectMeta, 0, len(items))
	for _, o := range items {
		out = append(out, meta(o))
	}
	return out
}

// namespaceObjects lists what is left in ns besides what Kubernetes keeps
// in every namespace (the default ServiceAccount, kube-root-ca.crt).
func namespaceObjects(t *testing.T, c kubernetes.Interface, ns string) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	deps, err := c.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range deps.Items {
		out = append(out, "deployment "+d.Name)
	}
	svcs, err := c.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range svcs.Items {
		out = append(out, "service "+s.Name)
	}
	secs, err := c.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secs.Items {
		out = append(out, "secret "+s.Name)
	}
	cms, err := c.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range cms.Items {
		if m.Name != "kube-root-ca.crt" {
			out = append(out, "configmap "+m.Name)
		}
	}
	sas, err := c.CoreV1().ServiceAccounts(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sas.Items {
		if s.Name != "default" {
			out = append(out, "serviceaccount "+s.Name)
		}
	}
	leases, err := c.CoordinationV1().Leases(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases.Items {
		out = append(out, "lease "+l.Name)
	}
	return out
}
