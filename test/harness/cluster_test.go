package harness

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
)

// podTimeout bounds a pod's way to Running on a loaded 2-core machine.
const podTimeout = 2 * time.Minute

// TestCluster starts the single-node cluster, runs pods the way the
// product's tests will (images from the node's registry, a registry pod
// behind a NodePort on 127.0.0.1, DNS names of Services) and then checks
// that nothing of the cluster is left on the machine.
func TestCluster(t *testing.T) {
	testkit.Integration(t)
	var c *Cluster
	var socket string
	t.Run("cluster", func(t *testing.T) {
		c = StartCluster(t, ClusterOptions{})
		socket = c.Containerd.Socket
		busybox := BusyboxImage(t)
		ref := c.PushImage(t, "test/busybox", "1", busybox)

		t.Run("deployment from the node's registry", func(t *testing.T) { testDeployment(t, c, ref) })
		t.Run("NodePort on 127.0.0.1 to an HTTP pod", func(t *testing.T) { testNodePortHTTP(t, c, ref) })
		t.Run("kubelet pulls from a registry pod via 127.0.0.1:nodePort", func(t *testing.T) { testPullViaNodePort(t, c) })
		t.Run("DNS from a pod", func(t *testing.T) { testPodDNS(t, c, ref) })
		t.Run("imported multi-platform index", func(t *testing.T) { testImportIndex(t, c, busybox) })
		t.Run("memory", func(t *testing.T) {
			t.Logf("cluster RSS: %d MiB over %d processes", c.RSS()>>20, len(c.procs))
		})
	})
	if c == nil {
		t.Fatal("the cluster did not start")
	}
	after, err := CaptureHostState()
	if err != nil {
		t.Fatal(err)
	}
	// Compared with the state StartCluster saw under the machine-wide lock
	// (another test binary's cluster may have run before it).
	if d := c.hostBefore.Diff(after); len(d) > 0 {
		t.Errorf("host state not restored: %v", d)
	}
	if pids := procsWithArg(socket); len(pids) > 0 {
		t.Errorf("processes of the cluster's containerd left: %v", pids)
	}
	if pids := procsWithArg(c.Dir); len(pids) > 0 {
		t.Errorf("processes using the cluster's directory left: %v", pids)
	}
	if m := mountsUnder(c.Dir); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}
	for _, d := range cgroupDirs() {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("cgroup %s left", d)
		}
	}
	if _, err := os.Stat("/run/netns/" + c.Netns.Name); err == nil {
		t.Errorf("network namespace %s left", c.Netns.Name)
	}
}

func testDeployment(t *testing.T, c *Cluster, ref string) {
	ctx := context.Background()
	labels := map[string]string{"app": "sleeper"}
	_, err := c.Client.AppsV1().Deployments("default").Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "sleeper"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To(int64(0)),
					Containers:                    []corev1.Container{{Name: "sleep", Image: ref, Command: []string{"sleep", "3600"}}},
				},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(podTimeout)
	var name string
	testkit.WaitFor(t, "the deployment's one pod", podTimeout, func() error {
		pods, err := c.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=sleeper"})
		if err != nil {
			return err
		}
		if len(pods.Items) != 1 {
			return fmt.Errorf("%d pods", len(pods.Items))
		}
		name = pods.Items[0].Name
		return nil
	})
	p := c.WaitPod(t, "default", name, time.Until(deadline), PodRunning)
	t.Logf("deployment pod %s Running (image %s)", p.Name, p.Status.ContainerStatuses[0].ImageID)
}

// createPod creates a pod of one container and its NodePort Service (when
// port > 0), and returns the Service's node port.
func createPod(t *testing.T, c *Cluster, name, image string, pull corev1.PullPolicy, port int32, command ...string) int {
	ctx := context.Background()
	labels := map[string]string{"app": name}
	ct := corev1.Container{Name: name, Image: image, ImagePullPolicy: pull, Command: command}
	if port > 0 {
		ct.ReadinessProbe = &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(port)}},
			PeriodSeconds: 1,
		}
	}
	_, err := c.Client.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To(int64(0)),
			RestartPolicy:                 corev1.RestartPolicyNever,
			Containers:                    []corev1.Container{ct},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if port == 0 {
		return 0
	}
	svc, err := c.Client.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeNodePort,
			Selector: labels,
			Ports:    []corev1.ServicePort{{Port: port, TargetPort: intstr.FromInt32(port)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return int(svc.Spec.Ports[0].NodePort)
}

// getFromNode GETs url from inside the node until it answers 200 (the
// Service's rules follow the pod's readiness a moment later).
func getFromNode(t *testing.T, c *Cluster, url string) string {
	client := c.Netns.HTTPClient()
	var body string
	testkit.WaitFor(t, "GET "+url+" from the node", podTimeout, func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %s", resp.Status)
		}
		body = string(b)
		return nil
	})
	return body
}

func testNodePortHTTP(t *testing.T, c *Cluster, ref string) {
	np := createPod(t, c, "web", ref, corev1.PullIfNotPresent, 8080,
		"sh", "-c", "echo hello-from-pod > /www/index.html && exec httpd -f -p 8080 -h /www")
	c.WaitPod(t, "default", "web", podTimeout, PodRunning)
	body := getFromNode(t, c, fmt.Sprintf("http://127.0.0.1:%d/index.html", np))
	if strings.TrimSpace(body) != "hello-from-pod" {
		t.Fatalf("NodePort body %q", body)
	}
}

// registryPodConfig is docker-registry's configuration inside the pod.
const registryPodConfig = `version: 0.1
storage:
  filesystem:
    rootdirectory: /tmp/registry
http:
  addr: 0.0.0.0:5000
`

func testPullViaNodePort(t *testing.T, c *Cluster) {
	regImage := "selfhost.test/registry:1"
	c.ImportImage(t, regImage, BusyboxImage(t, dockerRegistryBin(t)))
	np := createPod(t, c, "registry", regImage, corev1.PullNever, 5000,
		"sh", "-c", "printf '"+registryPodConfig+"' > /tmp/config.yml && exec "+dockerRegistryBin(t)+" serve /tmp/config.yml")
	c.WaitPod(t, "default", "registry", podTimeout, PodRunning)
	getFromNode(t, c, fmt.Sprintf("http://127.0.0.1:%d/v2/", np))

	// The test pushes through the node IP (reachable from the root
	// namespace); kubelet pulls through 127.0.0.1:<nodePort>.
	img := BusyboxImage(t)
	pushImage(t, fmt.Sprintf("%s:%d", c.NodeIP, np), "test/pulled", "1", img)
	ref := fmt.Sprintf("127.0.0.1:%d/test/pulled:1", np)
	createPod(t, c, "pulled", ref, corev1.PullAlways, 0, "sleep", "3600")
	p := c.WaitPod(t, "default", "pulled", podTimeout, PodRunning)
	if got := p.Status.ContainerStatuses[0].Image; got != ref {
		t.Errorf("pod image %q, want %q", got, ref)
	}
}

// testPodDNS resolves Service names from a pod. busybox's nslookup does
// not apply the search list, so the names are fully qualified and the
// search list and ndots (which make "<svc>.<ns>.svc" work for resolvers
// that apply them, such as Go's and glibc's) are checked in resolv.conf.
func testPodDNS(t *testing.T, c *Cluster, ref string) {
	createPod(t, c, "dns", ref, corev1.PullIfNotPresent, 0, "sh", "-c", strings.Join([]string{
		"cat /etc/resolv.conf",
		"grep -qx 'search default.svc." + ClusterDomain + " svc." + ClusterDomain + " " + ClusterDomain + "' /etc/resolv.conf",
		"grep -qx 'options ndots:5' /etc/resolv.conf",
		"nslookup kubernetes.default.svc." + ClusterDomain,
		"nslookup web.default.svc." + ClusterDomain,
		// A name outside the cluster domain: NXDOMAIN, not SERVFAIL.
		"nslookup -type=txt _grpc_config.web.default.svc 2>&1 | grep -q NXDOMAIN",
	}, " && "))
	p := c.WaitPod(t, "default", "dns", podTimeout, PodSucceeded)
	t.Logf("DNS pod:\n%s", c.DescribePod(p.Namespace, p.Name))
}

// testImportIndex imports an index whose host image is busybox under a
// config of its own: kubelet 1.37 treats an image ID it pulled before
// (the registry's busybox) as not preloaded, and with pull policy Never
// refuses it under another name.
func testImportIndex(t *testing.T, c *Cluster, busybox v1.Image) {
	busybox, err := mutate.Config(busybox, v1.Config{
		Cmd: []string{"sh"}, Env: []string{"PATH=/bin"}, Labels: map[string]string{"test": "import-index"},
	})
	if err != nil {
		t.Fatal(err)
	}
	arm, err := BuildImage(types.OCIManifestSchema1, v1.Platform{OS: "linux", Architecture: "arm64"}, 1, 1024)
	if err != nil {
		t.Fatal(err)
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: busybox, Descriptor: v1.Descriptor{Platform: &HostPlatform}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	const ref = "selfhost.test/multi:1"
	c.ImportIndex(t, ref, idx)
	createPod(t, c, "multi", ref, corev1.PullNever, 0, "sleep", "3600")
	c.WaitPod(t, "default", "multi", podTimeout, PodRunning)
}
