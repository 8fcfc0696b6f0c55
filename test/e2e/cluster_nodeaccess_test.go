package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

const (
	forwarderName     = "selfhost-forwarder"
	forwarderSelector = "app.kubernetes.io/name=k8s-selfhost-repo,app.kubernetes.io/component=forwarder"
)

// TestClusterNodeAccess repeats the cluster run's core on a node whose
// kube-proxy runs in nftables mode with its loopback NodePort gate off, so
// only the chart's forwarder (nodeAccess auto, the default) makes
// 127.0.0.1:<nodePort> reach an edge (docs/kubernetes.md, "Node access"):
// the forwarder finds that it carries this node; pods in two labelled
// namespaces run through their edges; team-b naming team-a's address
// with its own secret gets 401; with no forwarder on the node new pods
// keep their images, and are rewritten again once it is back; a pod
// created while the forwarder's pod is replaced is either rewritten and
// runs or keeps its image; the forwarder killed during a pull: kubelet
// retries and the pod runs. IPVS cannot run on these machines (no
// ip_vs: the kernel has no module support), so there is no IPVS variant.
func TestClusterNodeAccess(t *testing.T) {
	e := newClusterEnvWith(t, harness.ClusterOptions{ProxyMode: "nftables"})
	ctx := context.Background()
	client := e.c.Client
	e.upstream.Push(t, "lab/app", "v1", harness.BusyboxImage(t))
	appRef := e.upstream.Host + "/lab/app:v1"

	e.install(t)
	e.waitDeploymentReady(t, releaseNS, chartName)
	e.waitForwarderReady(t)
	nodePort := map[string]int32{}
	for _, ns := range []string{"team-a", "team-b"} {
		e.labelNamespace(t, ns)
	}
	for _, ns := range []string{"team-a", "team-b"} {
		e.waitDeploymentReady(t, ns, kubecontract.EdgeName)
		svc, err := client.CoreV1().Services(ns).Get(ctx, kubecontract.EdgeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		nodePort[ns] = svc.Spec.Ports[0].NodePort
	}

	// The forwarder's probe: the loopback connections reach its own
	// listener on this node.
	var st forwarderStatus
	waitUntil(t, "the forwarder carrying both edges' ports", clusterTimeout, func() bool {
		st = e.forwarderStatus(t)
		return st.Path == "forwarder" && st.port(nodePort["team-a"]).Path == "forwarder" && st.port(nodePort["team-b"]).Path == "forwarder"
	}, func() string { return fmt.Sprintf("%+v", st) })

	// Pods in both namespaces run through their edges.
	for _, ns := range []string{"team-a", "team-b"} {
		e.appDeployment(t, ns, "app", appRef, 1)
		p := e.runningPods(t, ns, "app", 1)[0]
		if want := fmt.Sprintf("127.0.0.1:%d/lab/lab/app:v1", nodePort[ns]); p.Spec.Containers[0].Image != want {
			t.Fatalf("%s pod image %q, want %q", ns, p.Spec.Containers[0].Image, want)
		}
	}

	// team-b names team-a's address with its own pull secret: 401 from
	// team-a's edge, through the forwarder.
	e.edgePod(t, "team-b", "intruder", fmt.Sprintf("127.0.0.1:%d/lab/lab/app:v1", nodePort["team-a"]))
	if msg := e.pullFailure(t, "team-b", "intruder"); !strings.Contains(msg, "401") {
		t.Errorf("team-b with team-a's address: %q, want a 401", msg)
	}

	// No forwarder on the node (its DaemonSet selects no node): new pods
	// keep their images; once it is back they are rewritten again.
	e.forwarderNodeSelector(t, map[string]string{"k8s-selfhost-repo.io/test-no-node": "none"})
	waitUntil(t, "no forwarder pod", clusterTimeout, func() bool { return len(e.forwarderPods(t)) == 0 }, nil)
	waitUntil(t, "the injector leaving images alone", clusterTimeout, func() bool { return e.admitted(t, "team-a", appRef) == appRef }, nil)
	if got := e.createAppPod(t, "team-a", "while-away", appRef); got.Spec.Containers[0].Image != appRef || got.Annotations[kubecontract.OriginalImagesAnnotation] != "" {
		t.Fatalf("pod created with no forwarder: image %q, annotations %v; want it untouched", got.Spec.Containers[0].Image, got.Annotations)
	}
	e.forwarderNodeSelector(t, nil)
	e.waitForwarderReady(t)
	rewritten := fmt.Sprintf("127.0.0.1:%d/lab/lab/app:v1", nodePort["team-a"])
	waitUntil(t, "the injector rewriting again", clusterTimeout, func() bool { return e.admitted(t, "team-a", appRef) == rewritten }, nil)
	if got := e.createAppPod(t, "team-a", "back", appRef); got.Spec.Containers[0].Image != rewritten {
		t.Fatalf("pod created with the forwarder back: image %q, want %q", got.Spec.Containers[0].Image, rewritten)
	}
	e.runningPods(t, "team-a", "back", 1)

	// The forwarder's pod deleted: a pod created meanwhile is rewritten
	// and runs, or keeps its image — never a rewritten pod that cannot
	// start.
	e.deleteForwarderPod(t, nil)
	if got := e.createAppPod(t, "team-a", "meanwhile", appRef); got.Spec.Containers[0].Image == appRef {
		t.Logf("pod created while the forwarder was replaced kept its image")
	} else {
		e.runningPods(t, "team-a", "meanwhile", 1)
		t.Logf("pod created while the forwarder was replaced was rewritten and runs")
	}
	e.waitForwarderReady(t)

	// The forwarder killed during a pull: kubelet retries, the pod runs.
	big, err := random.Layer(256<<20, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	bigImg, err := mutate.AppendLayers(harness.BusyboxImage(t), big)
	if err != nil {
		t.Fatal(err)
	}
	e.upstream.Push(t, "lab/big", "v1", bigImg)
	e.appDeployment(t, "team-b", "big", e.upstream.Host+"/lab/big:v1", 1)
	waitUntil(t, "kubelet pulling lab/big", clusterTimeout, func() bool { return e.podEvent(t, "team-b", "big", "Pulling") }, nil)
	zero := int64(0)
	e.deleteForwarderPod(t, &zero)
	e.runningPods(t, "team-b", "big", 1)
	t.Logf("lab/big Running; kubelet reported a failed pull on the way: %v", e.podEvent(t, "team-b", "big", "Failed"))
}

// forwarderStatus is the forwarder's /status (forwarder/internal/agent).
type forwarderStatus struct {
	Path  string          `json:"path"`
	Ready bool            `json:"ready"`
	Ports []forwarderPort `json:"ports"`
}

type forwarderPort struct {
	Service   string `json:"service"`
	NodePort  int32  `json:"nodePort"`
	Listening bool   `json:"listening"`
	Path      string `json:"path"`
}

// port is node port n's entry (zero when there is none).
func (s forwarderStatus) port(n int32) forwarderPort {
	for _, q := range s.Ports {
		if q.NodePort == n {
			return q
		}
	}
	return forwarderPort{}
}

// forwarderStatus reads the forwarder's loopback status endpoint on the
// node (the chart's default forwarder.statusPort).
func (e *clusterEnv) forwarderStatus(t *testing.T) forwarderStatus {
	t.Helper()
	var st forwarderStatus
	resp, err := e.c.Netns.HTTPClient().Get("http://127.0.0.1:9095/status")
	if err != nil {
		return st
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode == http.StatusOK {
		_ = json.NewDecoder(resp.Body).Decode(&st)
	}
	return st
}

// waitForwarderReady waits until the DaemonSet's pods are updated and
// ready on every node.
func (e *clusterEnv) waitForwarderReady(t *testing.T) {
	t.Helper()
	var ds *appsv1.DaemonSet
	waitUntil(t, "daemonset "+forwarderName+" ready", clusterTimeout, func() bool {
		var err error
		ds, err = e.c.Client.AppsV1().DaemonSets(releaseNS).Get(context.Background(), forwarderName, metav1.GetOptions{})
		if err != nil {
			return false
		}
		s := ds.Status
		return s.ObservedGeneration >= ds.Generation && s.DesiredNumberScheduled > 0 &&
			s.NumberReady == s.DesiredNumberScheduled && s.UpdatedNumberScheduled == s.DesiredNumberScheduled
	}, func() string { return e.describePods(releaseNS, forwarderSelector) })
}

func (e *clusterEnv) forwarderPods(t *testing.T) []corev1.Pod {
	t.Helper()
	pods, err := e.c.Client.CoreV1().Pods(releaseNS).List(context.Background(), metav1.ListOptions{LabelSelector: forwarderSelector})
	if err != nil {
		t.Fatal(err)
	}
	return pods.Items
}

// forwarderNodeSelector sets the DaemonSet's node selector (nil: none).
func (e *clusterEnv) forwarderNodeSelector(t *testing.T, sel map[string]string) {
	t.Helper()
	ctx := context.Background()
	ds, err := e.c.Client.AppsV1().DaemonSets(releaseNS).Get(ctx, forwarderName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ds.Spec.Template.Spec.NodeSelector = sel
	if _, err := e.c.Client.AppsV1().DaemonSets(releaseNS).Update(ctx, ds, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// deleteForwarderPod deletes the forwarder's pod(s) with grace (nil: the
// pod's own).
func (e *clusterEnv) deleteForwarderPod(t *testing.T, grace *int64) {
	t.Helper()
	for _, p := range e.forwarderPods(t) {
		if err := e.c.Client.CoreV1().Pods(releaseNS).Delete(context.Background(), p.Name, metav1.DeleteOptions{GracePeriodSeconds: grace}); err != nil {
			t.Fatal(err)
		}
	}
}

// appPod is a pod of one container running image.
func appPod(name, image string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr(int64(0)),
			Containers: []corev1.Container{{
				Name: "app", Image: image, ImagePullPolicy: corev1.PullAlways, Command: []string{"sleep", "3600"},
			}},
		},
	}
}

// admitted is the image the webhook gives a pod of image in ns now
// (a dry-run create: admission runs, nothing is stored).
func (e *clusterEnv) admitted(t *testing.T, ns, image string) string {
	t.Helper()
	p, err := e.c.Client.CoreV1().Pods(ns).Create(context.Background(), appPod("dry-run", image), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		t.Fatal(err)
	}
	return p.Spec.Containers[0].Image
}

// createAppPod creates a pod of image in ns and returns it as admitted.
func (e *clusterEnv) createAppPod(t *testing.T, ns, name, image string) *corev1.Pod {
	t.Helper()
	p, err := e.c.Client.CoreV1().Pods(ns).Create(context.Background(), appPod(name, image), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// podEvent reports whether an event with reason was recorded for a pod
// of ns whose name starts with prefix.
func (e *clusterEnv) podEvent(t *testing.T, ns, prefix, reason string) bool {
	t.Helper()
	evs, err := e.c.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "reason=" + reason})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs.Items {
		if ev.InvolvedObject.Kind == "Pod" && strings.HasPrefix(ev.InvolvedObject.Name, prefix) {
			return true
		}
	}
	return false
}
