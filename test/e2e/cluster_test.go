package e2e

// A user's first hour on a real node (docs/kubernetes.md): `helm install`
// of the chart with images built from this checkout, two labelled
// namespaces whose pods pull through their own edges, shared S3, the pull
// token between namespaces, and `helm uninstall` leaving nothing behind.
// Every step waits on a condition of the cluster; none sleeps blindly.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

func TestCluster(t *testing.T) {
	e := newClusterEnv(t)
	ctx := context.Background()
	client := e.c.Client
	app := e.upstream.Push(t, "lab/app", "v1", harness.BusyboxImage(t))
	e.hub.Push(t, "library/app", "v1", e.variant(t, 9))
	appRef := e.upstream.Host + "/lab/app:v1"

	// 1. helm install; both control-plane pods Ready.
	installed := time.Now()
	e.install(t)
	e.waitDeploymentReady(t, releaseNS, chartName)
	t.Logf("control plane Ready %s after helm install", time.Since(installed).Round(time.Millisecond))

	// 2. Two namespaces opt in; their edges become Ready (probes pass once
	// the projected token was accepted and the configuration applied).
	for _, ns := range []string{"team-a", "team-b"} {
		e.labelNamespace(t, ns)
	}
	for _, ns := range []string{"team-a", "team-b"} {
		e.waitDeploymentReady(t, ns, kubecontract.EdgeName)
	}
	edgeNodePort := func(ns string) int32 {
		svc, err := client.CoreV1().Services(ns).Get(ctx, kubecontract.EdgeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return svc.Spec.Ports[0].NodePort
	}

	// 3. team-a's Deployment: the webhook (called by the apiserver through
	// its Service) rewrote the image to team-a's edge; the pod runs; the
	// upstream served the blobs.
	e.appDeployment(t, "team-a", "app", appRef, 1)
	podA := e.runningPods(t, "team-a", "app", 1)[0]
	t.Logf("first pod Running through its edge %s after helm install", time.Since(installed).Round(time.Millisecond))
	wantImage := fmt.Sprintf("127.0.0.1:%d/lab/lab/app:v1", edgeNodePort("team-a"))
	if got := podA.Spec.Containers[0].Image; got != wantImage {
		t.Fatalf("team-a pod image %q, want %q (rewritten by the webhook)", got, wantImage)
	}
	if !strings.Contains(podA.Annotations[kubecontract.OriginalImagesAnnotation], appRef) {
		t.Errorf("original images annotation %q lacks %s", podA.Annotations[kubecontract.OriginalImagesAnnotation], appRef)
	}
	blobGETs := e.upstream.BlobGETs(t, "lab/app")
	if blobGETs == 0 {
		t.Fatalf("the upstream served no blob of lab/app; layers %v", app.Layers)
	}
	if misses := e.edgeMetric(t, "team-a", "edge_cache_misses_total"); misses == 0 {
		t.Errorf("team-a's edge counted no cache misses")
	}

	// 4. The same image in team-b: Running, served from the shared bucket
	// with no new upstream blob GET.
	e.appDeployment(t, "team-b", "app", appRef, 1)
	podB := e.runningPods(t, "team-b", "app", 1)[0]
	if got, want := podB.Spec.Containers[0].Image, fmt.Sprintf("127.0.0.1:%d/lab/lab/app:v1", edgeNodePort("team-b")); got != want {
		t.Fatalf("team-b pod image %q, want %q", got, want)
	}
	if n := e.upstream.BlobGETs(t, "lab/app"); n != blobGETs {
		t.Errorf("team-b's pull made %d new upstream blob GETs, want 0 (shared S3)", n-blobGETs)
	}

	// 4b. A private image: team-a, with its own credentials (its
	// dockerconfigjson Secret), runs it; team-b without credentials is
	// refused by its edge (the shared copy needs a proof team-b cannot
	// make); once team-b adds its own credentials it runs, with no new
	// upstream blob GET.
	secretImg := e.variant(t, 7)
	e.upstream.Push(t, "lab/secret", "v1", secretImg)
	secretLayers, err := secretImg.Layers()
	if err != nil {
		t.Fatal(err)
	}
	secretLayer, err := secretLayers[len(secretLayers)-1].Digest()
	if err != nil {
		t.Fatal(err)
	}
	e.tenantCredentials(t, "team-a", clusterUpstreamUser, e.upstreamPass)
	secretImage := func(ns string) string { return fmt.Sprintf("127.0.0.1:%d/lab/lab/secret:v1", edgeNodePort(ns)) }
	// The Secret reaches team-a's edge with a configuration push; a pull
	// that comes first fails and kubelet retries it.
	e.edgePod(t, "team-a", "secret", secretImage("team-a"))
	e.runningPods(t, "team-a", "secret", 1)
	secretGETs := e.upstream.BlobGETs(t, "lab/secret")
	// The node forgets the layer, so team-b's pull has to fetch it.
	e.removeFromNode(t, "team-a", "secret", secretImage("team-a"), secretLayer.String())
	e.edgePod(t, "team-b", "secret", secretImage("team-b"))
	if msg := e.pullFailure(t, "team-b", "secret"); msg == "" {
		t.Errorf("team-b's pull of lab/secret without credentials failed with no message")
	}
	e.tenantCredentials(t, "team-b", clusterUpstreamUser, e.upstreamPass)
	// kubelet retries the pull within its back-off (at most ~80 s here).
	e.runningPods(t, "team-b", "secret", 1)
	if n := e.upstream.BlobGETs(t, "lab/secret"); n != secretGETs {
		t.Errorf("team-b's pull of lab/secret made %d new upstream blob GETs, want 0 (shared S3 after its own proof)", n-secretGETs)
	}

	// 5. A team-b pod naming team-a's edge directly (webhook opted out),
	// with team-b's pull secret: the edge refuses it with 401.
	_, err = client.CoreV1().Pods("team-b").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "intruder", Annotations: map[string]string{kubecontract.OptOutAnnotation: "false"}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr(int64(0)),
			ImagePullSecrets:              []corev1.LocalObjectReference{{Name: kubecontract.PullSecretName}},
			Containers: []corev1.Container{{
				Name: "app", Image: fmt.Sprintf("127.0.0.1:%d/lab/lab/app:v1", edgeNodePort("team-a")),
				ImagePullPolicy: corev1.PullAlways, Command: []string{"sleep", "3600"},
			}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if msg := e.pullFailure(t, "team-b", "intruder"); !strings.Contains(msg, "401") {
		t.Errorf("team-b's pull from team-a's edge failed with %q, want a 401", msg)
	}

	// The cluster-wide mirror, from outside the cluster.
	e.checkMirror(t, e.hub)

	// No Warning event from the product's own pods: the probes wait for
	// the servers (startup probes), nothing crash-loops.
	for _, ns := range []string{releaseNS, "team-a", "team-b"} {
		if w := e.productWarnings(t, ns); len(w) > 0 {
			t.Errorf("Warning events of the product's pods in %s:\n%s", ns, strings.Join(w, "\n"))
		}
	}

	// 6. The leader control-plane pod deleted during a rollout of 10 pods:
	// all of them Running (the other replica serves the webhook).
	e.appDeployment(t, "team-a", "rollout", appRef, 10)
	e.deleteLeader(t)
	for _, p := range e.runningPods(t, "team-a", "rollout", 10) {
		if !strings.HasPrefix(p.Spec.Containers[0].Image, "127.0.0.1:") {
			t.Errorf("rollout pod %s image %s was not rewritten", p.Name, p.Spec.Containers[0].Image)
		}
	}
	e.waitDeploymentReady(t, releaseNS, chartName)

	// The control plane scaled to 0: the edges keep their last good
	// configuration; a pod naming the edge (as rewritten pods do) pulls an
	// image the cache has never seen.
	e.scaleControlPlane(t, 0)
	e.upstream.Push(t, "lab/app", "v2", e.variant(t, 2))
	before := e.upstream.BlobGETs(t, "lab/app")
	e.edgePod(t, "team-a", "offline-v2", fmt.Sprintf("127.0.0.1:%d/lab/lab/app:v2", edgeNodePort("team-a")))
	e.runningPods(t, "team-a", "offline-v2", 1)
	if e.upstream.BlobGETs(t, "lab/app") == before {
		t.Errorf("the v2 pull with the control plane down fetched nothing upstream; was it served at all?")
	}
	// An edge pod that starts while the control plane is down (fresh
	// state) fails closed: not Ready, 503 on every registry request; the
	// namespace's other replica keeps serving. It becomes Ready once the
	// control plane is back.
	e.failsClosed(t, "team-b")
	e.scaleControlPlane(t, 2)
	e.waitDeploymentReady(t, releaseNS, chartName)
	e.waitDeploymentReady(t, "team-b", kubecontract.EdgeName)

	// 7. Roll team-a's edge Deployment while 10 pods pull a cold image:
	// every pod Running with no failed pull.
	e.upstream.Push(t, "lab/app", "v3", e.variant(t, 3))
	e.rollEdge(t, "team-a")
	e.appDeployment(t, "team-a", "during-roll", e.upstream.Host+"/lab/app:v3", 10)
	e.runningPods(t, "team-a", "during-roll", 10)
	e.waitDeploymentReady(t, "team-a", kubecontract.EdgeName)
	if failed := e.failedPulls(t, "team-a", "during-roll"); len(failed) > 0 {
		t.Errorf("pulls failed while the edge rolled:\n%s", strings.Join(failed, "\n"))
	}

	// helm upgrade changing a value: applied to every edge.
	if _, err := e.h.run("upgrade", "selfhost", e.h.chart, "--kubeconfig", e.c.Kubeconfig, "--namespace", releaseNS,
		"--reuse-values", "--set", "edge.replicas=3"); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"team-a", "team-b"} {
		waitUntil(t, ns+" edge with 3 replicas after helm upgrade", clusterTimeout, func() bool {
			d, err := client.AppsV1().Deployments(ns).Get(ctx, kubecontract.EdgeName, metav1.GetOptions{})
			return err == nil && d.Spec.Replicas != nil && *d.Spec.Replicas == 3 && d.Status.ReadyReplicas == 3
		}, func() string { return e.describePods(ns, "") })
	}

	// 8. helm uninstall: everything the release and the control plane
	// created is gone; the running pods keep running.
	if _, err := e.h.run("uninstall", "selfhost", "--kubeconfig", e.c.Kubeconfig, "--namespace", releaseNS, "--wait", "--timeout", "3m"); err != nil {
		t.Fatal(err)
	}
	// The mirror's certificate Secret is the operator's (made before the
	// install), not the release's: the operator removes it.
	if err := client.CoreV1().Secrets(releaseNS).Delete(ctx, mirrorCertSecret, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "nothing left of the release", clusterTimeout, func() bool { return len(e.leftovers(t)) == 0 },
		func() string { return strings.Join(e.leftovers(t), "\n") })
	for _, ns := range []string{"team-a", "team-b"} {
		p, err := client.CoreV1().Pods(ns).Get(ctx, map[string]string{"team-a": podA.Name, "team-b": podB.Name}[ns], metav1.GetOptions{})
		if err != nil || !harness.PodRunning(p) {
			t.Errorf("pod of %s after uninstall: %v %v", ns, err, p.Status.Phase)
		}
	}
}

// edgeMetric sums the samples of a counter over every edge pod of ns,
// scraped from the pods' /metrics on the node.
func (e *clusterEnv) edgeMetric(t *testing.T, ns, metric string) float64 {
	t.Helper()
	pods, err := e.c.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{
		LabelSelector: kubecontract.ComponentLabel + "=" + kubecontract.EdgeComponent,
	})
	if err != nil {
		t.Fatal(err)
	}
	client := e.c.Netns.HTTPClient()
	sum := 0.0
	for _, p := range pods.Items {
		if p.Status.PodIP == "" {
			continue
		}
		resp, err := client.Get(fmt.Sprintf("http://%s:5000/metrics", p.Status.PodIP))
		if err != nil {
			t.Fatalf("scrape %s/%s: %v", ns, p.Name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("scrape %s/%s: %s", ns, p.Name, resp.Status)
		}
		samples, err := harness.ParseMetrics(string(body))
		if err != nil {
			t.Fatalf("scrape %s/%s: %v", ns, p.Name, err)
		}
		sum += harness.SumSamples(samples, metric, nil)
	}
	return sum
}

// leftovers lists what remains of the release after helm uninstall:
// anything labelled as managed by the control plane in any namespace, the
// webhook configuration, the leader Lease, and the release namespace's
// Secrets and pods.
func (e *clusterEnv) leftovers(t *testing.T) []string {
	t.Helper()
	ctx := context.Background()
	c := e.c.Client
	managed := metav1.ListOptions{LabelSelector: kubecontract.ManagedByLabel + "=" + kubecontract.ManagedByValue}
	all := metav1.ListOptions{}
	lists := []struct {
		kind string
		list func() (runtime.Object, error)
	}{
		{"MutatingWebhookConfiguration", func() (runtime.Object, error) {
			return c.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, managed)
		}},
		{"Deployment", func() (runtime.Object, error) { return c.AppsV1().Deployments("").List(ctx, managed) }},
		{"Service", func() (runtime.Object, error) { return c.CoreV1().Services("").List(ctx, managed) }},
		{"Secret", func() (runtime.Object, error) { return c.CoreV1().Secrets("").List(ctx, managed) }},
		{"ConfigMap", func() (runtime.Object, error) { return c.CoreV1().ConfigMaps("").List(ctx, managed) }},
		{"ServiceAccount", func() (runtime.Object, error) { return c.CoreV1().ServiceAccounts("").List(ctx, managed) }},
		{"PodDisruptionBudget", func() (runtime.Object, error) { return c.PolicyV1().PodDisruptionBudgets("").List(ctx, managed) }},
		{"Lease", func() (runtime.Object, error) { return c.CoordinationV1().Leases(releaseNS).List(ctx, all) }},
		{"Secret", func() (runtime.Object, error) { return c.CoreV1().Secrets(releaseNS).List(ctx, all) }},
		{"Pod", func() (runtime.Object, error) { return c.CoreV1().Pods(releaseNS).List(ctx, all) }},
	}
	var out []string
	for _, l := range lists {
		obj, err := l.list()
		if err != nil {
			out = append(out, fmt.Sprintf("list %s: %v", l.kind, err))
			continue
		}
		items, err := meta.ExtractList(obj)
		if err != nil {
			t.Fatalf("list %s: %v", l.kind, err)
		}
		for _, it := range items {
			m, err := meta.Accessor(it)
			if err != nil {
				t.Fatalf("list %s: %v", l.kind, err)
			}
			out = append(out, l.kind+" "+m.GetNamespace()+"/"+m.GetName())
		}
	}
	return out
}

// failsClosed deletes one edge pod of ns (the control plane is down) and
// checks that its replacement answers /healthz but 503 on /readyz and the
// registry API.
func (e *clusterEnv) failsClosed(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	sel := metav1.ListOptions{LabelSelector: kubecontract.ComponentLabel + "=" + kubecontract.EdgeComponent}
	pods, err := e.c.Client.CoreV1().Pods(ns).List(ctx, sel)
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("edge pods of %s: %v", ns, err)
	}
	old := map[string]bool{}
	for _, p := range pods.Items {
		old[p.Name] = true
	}
	if err := e.c.Client.CoreV1().Pods(ns).Delete(ctx, pods.Items[0].Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	client := e.c.Netns.HTTPClient()
	status := func(url string) int {
		resp, err := client.Get(url)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	var ip string
	waitUntil(t, "a replacement edge pod of "+ns+" that answers /healthz", clusterTimeout, func() bool {
		pods, err := e.c.Client.CoreV1().Pods(ns).List(ctx, sel)
		if err != nil {
			return false
		}
		for _, p := range pods.Items {
			if !old[p.Name] && p.Status.PodIP != "" && status("http://"+p.Status.PodIP+":5000/healthz") == http.StatusOK {
				ip = p.Status.PodIP
				return true
			}
		}
		return false
	}, func() string { return e.describePods(ns, sel.LabelSelector) })
	for _, path := range []string{"/readyz", "/v2/", "/v2/lab/lab/app/manifests/v1"} {
		if got := status("http://" + ip + ":5000" + path); got != http.StatusServiceUnavailable {
			t.Errorf("unconfigured edge %s %s: %d, want 503", ns, path, got)
		}
	}
}
