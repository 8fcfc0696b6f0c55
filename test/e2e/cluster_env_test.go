package e2e

// The environment of TestCluster: a real single-node cluster
// (harness.StartCluster), the product's images built from this checkout
// and pushed to the node's registry, the test upstream and versitygw on
// the node, and the chart installed with helm.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/certs"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/imagebuild"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// clusterTimeout bounds every wait on the cluster: pods start in about a
// second here, a loaded CI machine needs far more.
const clusterTimeout = 3 * time.Minute

// clusterUpstreamUser is the user of the test upstream's private
// repository lab/secret.
const clusterUpstreamUser = "tester"

type clusterEnv struct {
	// upstreamPass is the password of clusterUpstreamUser.
	upstreamPass string
	c            *harness.Cluster
	h            *helmCLI
	upstream     *harness.NodeUpstream
	// hub stands in for Docker Hub (prefix dockerhub, host docker.io).
	hub *harness.NodeUpstream
	// mirrorCA is the PEM CA of the mirror's TLS certificate.
	mirrorCA []byte
	s3       *harness.S3
	// images are the product's images built in this run.
	images *imagebuild.Result
	// imageRepo is where pods pull the product's images from
	// (127.0.0.1:5000/k8s-selfhost-repo on the node).
	imageRepo string
}

// newClusterEnv starts the cluster and its servers and pushes the images.
func newClusterEnv(t *testing.T) *clusterEnv {
	t.Helper()
	return newClusterEnvWith(t, harness.ClusterOptions{})
}

// newClusterEnvWith is newClusterEnv with the cluster's options (kube-proxy
// mode).
func newClusterEnvWith(t *testing.T, opts harness.ClusterOptions) *clusterEnv {
	t.Helper()
	c := harness.StartCluster(t, opts)
	e := &clusterEnv{c: c, h: newHelm(t)}
	// lab/secret is private: only a namespace's own credentials open it.
	e.upstreamPass = "lab-" + cpSecret(t)
	e.upstream = c.StartUpstream(t, "-user", clusterUpstreamUser+":"+e.upstreamPass, "-private", "lab/secret")
	// hub stands in for Docker Hub (prefix dockerhub, host docker.io) for
	// the mirror's clients.
	e.hub = c.StartUpstream(t)
	e.s3 = c.StartS3(t)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	res, err := imagebuild.Build(ctx, imagebuild.Options{
		Platforms: []v1.Platform{{OS: "linux", Architecture: "amd64"}},
		Prefix:    c.RegistryAddr + "/k8s-selfhost-repo",
		Log:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatalf("build images: %v", err)
	}
	if err := res.Push(ctx); err != nil {
		t.Fatalf("push images: %v", err)
	}
	t.Logf("images built and pushed in %s", time.Since(start).Round(time.Millisecond))
	e.images, e.imageRepo = res, c.RegistryNodeAddr+"/k8s-selfhost-repo"
	return e
}

// install runs helm install from oci:// (the chart pushed to the cluster's
// registry) with the seed's values (s3.*, s3Credentials.*, webhook.enabled)
// plus the image registry override, the test upstreams and the mirror.
func (e *clusterEnv) install(t *testing.T, extra ...string) {
	t.Helper()
	// From oci://, as the seed's users install it: the chart of this
	// checkout, pushed to the cluster's registry by the documented command.
	ref, version := harness.PushChart(t, e.c.RegistryAddr, true)
	e.mirrorCA = e.mirrorCertificate(t)
	args := []string{"install", "selfhost", ref, "--version", version, "--plain-http", "--kubeconfig", e.c.Kubeconfig,
		"--namespace", releaseNS, "--create-namespace",
		"--set", "image.repository=" + e.imageRepo + "/controlplane",
		"--set", "edge.image.repository=" + e.imageRepo + "/edge",
		"--set", "webhook.enabled=true",
		"--set", "s3.bucket=" + e.s3.Bucket + ",s3.region=" + e.s3.Region + ",s3.regionEndpoint=" + e.s3.Endpoint + ",s3.pathStyle=true",
		"--set", "s3Credentials.accessKeyId=" + e.s3.Access + ",s3Credentials.secretAccessKey=" + e.s3.Secret,
		"--set-json", fmt.Sprintf(`upstreams=[{"prefix":"lab","url":%q,"hosts":[%q]},{"prefix":"dockerhub","url":%q,"hosts":["docker.io"]}]`,
			e.upstream.URL, e.upstream.Host, e.hub.URL),
		"--set", "mirror.enabled=true,mirror.tls.secretName=" + mirrorCertSecret,
	}
	args = append(args, extra...)
	if _, err := e.h.run(args...); err != nil {
		t.Fatal(err)
	}
}

// waitDeploymentReady waits until every replica of ns/name is updated and
// ready.
func (e *clusterEnv) waitDeploymentReady(t *testing.T, ns, name string) *appsv1.Deployment {
	t.Helper()
	var d *appsv1.Deployment
	waitUntil(t, "deployment "+ns+"/"+name+" ready", clusterTimeout, func() bool {
		var err error
		d, err = e.c.Client.AppsV1().Deployments(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil || d.Spec.Replicas == nil {
			return false
		}
		want := *d.Spec.Replicas
		return d.Status.ObservedGeneration >= d.Generation && d.Status.UpdatedReplicas == want &&
			d.Status.ReadyReplicas == want && d.Status.Replicas == want
	}, func() string { return e.describePods(ns, "") })
	return d
}

// describePods is a failure detail: every pod of ns (matching selector)
// with its phase, container states and recent events.
func (e *clusterEnv) describePods(ns, selector string) string {
	pods, err := e.c.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, p := range pods.Items {
		b.WriteString(e.c.DescribePod(ns, p.Name))
		b.WriteString("\n")
	}
	return b.String()
}

// labelNamespace creates ns if needed and opts it in.
func (e *clusterEnv) labelNamespace(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	_, err := e.c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: ns, Labels: map[string]string{kubecontract.OptInLabel: kubecontract.OptInValue},
	}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		var n *corev1.Namespace
		if n, err = e.c.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err == nil {
			n.Labels[kubecontract.OptInLabel] = kubecontract.OptInValue
			_, err = e.c.Client.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}

// appDeployment creates a Deployment of replicas pods running image.
func (e *clusterEnv) appDeployment(t *testing.T, ns, name, image string, replicas int32) {
	t.Helper()
	sel := map[string]string{"app": name}
	_, err := e.c.Client.AppsV1().Deployments(ns).Create(context.Background(), &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: sel},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr(int64(0)),
					Containers: []corev1.Container{{
						Name: "app", Image: image, ImagePullPolicy: corev1.PullAlways,
						Command: []string{"sleep", "3600"},
					}},
				},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// runningPods waits until ns has want Running pods with label app=name
// and returns them.
func (e *clusterEnv) runningPods(t *testing.T, ns, name string, want int) []corev1.Pod {
	t.Helper()
	sel := labels.Set{"app": name}.String()
	var running []corev1.Pod
	waitUntil(t, fmt.Sprintf("%d Running pods of %s/%s", want, ns, name), clusterTimeout, func() bool {
		pods, err := e.c.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return false
		}
		running = running[:0]
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && harness.PodRunning(&p) {
				running = append(running, p)
			}
		}
		return len(running) == want
	}, func() string { return e.describePods(ns, sel) })
	return running
}

// pullFailure waits until a container of pod ns/name fails its image pull
// and returns the kubelet's message; it fails the test if the pod runs.
func (e *clusterEnv) pullFailure(t *testing.T, ns, name string) string {
	t.Helper()
	var msg string
	waitUntil(t, "image pull failure of "+ns+"/"+name, clusterTimeout, func() bool {
		p, err := e.c.Client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		if harness.PodRunning(p) {
			t.Fatalf("pod %s/%s is Running; want an image pull failure", ns, name)
		}
		for _, cs := range p.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil && (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff") && w.Message != "" {
				msg = w.Message
				return true
			}
		}
		return false
	}, func() string { return e.c.DescribePod(ns, name) })
	return msg
}

// productWarnings lists the Warning events of the product's own pods
// (control plane and edges: their names start with "selfhost-") in ns.
func (e *clusterEnv) productWarnings(t *testing.T, ns string) []string {
	t.Helper()
	evs, err := e.c.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "type=Warning"})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ev := range evs.Items {
		if ev.InvolvedObject.Kind == "Pod" && strings.HasPrefix(ev.InvolvedObject.Name, "selfhost-") {
			out = append(out, fmt.Sprintf("%s %s: %s", ev.InvolvedObject.Name, ev.Reason, ev.Message))
		}
	}
	return out
}

// deleteLeader deletes the control-plane pod that holds the Lease.
func (e *clusterEnv) deleteLeader(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	lease, err := e.c.Client.CoordinationV1().Leases(releaseNS).Get(ctx, kubecontract.LeaseName, metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil {
		t.Fatalf("lease: %v", err)
	}
	pod, _, _ := strings.Cut(*lease.Spec.HolderIdentity, "_")
	if err := e.c.Client.CoreV1().Pods(releaseNS).Delete(ctx, pod, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete leader %s: %v", pod, err)
	}
	t.Logf("deleted the leader %s", pod)
}

// scaleControlPlane sets the control plane's replicas and, for 0, waits
// until its pods are gone.
func (e *clusterEnv) scaleControlPlane(t *testing.T, n int32) {
	t.Helper()
	ctx := context.Background()
	api := e.c.Client.AppsV1().Deployments(releaseNS)
	scale, err := api.GetScale(ctx, chartName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	scale.Spec.Replicas = n
	if _, err := api.UpdateScale(ctx, chartName, scale, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if n > 0 {
		return
	}
	waitUntil(t, "control plane pods gone", clusterTimeout, func() bool {
		pods, err := e.c.Client.CoreV1().Pods(releaseNS).List(ctx, metav1.ListOptions{LabelSelector: scale.Status.Selector})
		return err == nil && len(pods.Items) == 0
	}, func() string { return e.describePods(releaseNS, "") })
}

// variant is the busybox image with one more small layer holding n, so
// that each variant has blobs no cache has seen.
func (e *clusterEnv) variant(t *testing.T, n int) v1.Image {
	t.Helper()
	layer, err := random.Layer(int64(64<<10+n), types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(harness.BusyboxImage(t), layer)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// edgePod creates a pod that names image (an edge address) itself, with
// the namespace's pull secret and the webhook opted out, as a pod the
// webhook rewrote earlier looks when it is pulled again.
func (e *clusterEnv) edgePod(t *testing.T, ns, name, image string) {
	t.Helper()
	_, err := e.c.Client.CoreV1().Pods(ns).Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name},
			Annotations: map[string]string{kubecontract.OptOutAnnotation: "false"}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr(int64(0)),
			ImagePullSecrets:              []corev1.LocalObjectReference{{Name: kubecontract.PullSecretName}},
			Containers: []corev1.Container{{
				Name: "app", Image: image, ImagePullPolicy: corev1.PullAlways, Command: []string{"sleep", "3600"},
			}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// rollEdge restarts ns's edge Deployment the way kubectl rollout restart
// does (a pod template annotation the controller leaves alone).
func (e *clusterEnv) rollEdge(t *testing.T, ns string) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":%q}}}}}`, time.Now().Format(time.RFC3339Nano))
	if _, err := e.c.Client.AppsV1().Deployments(ns).Patch(context.Background(), kubecontract.EdgeName,
		k8stypes.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// failedPulls lists the kubelet's Failed events (a failed image pull)
// for pods of ns whose names start with prefix.
func (e *clusterEnv) failedPulls(t *testing.T, ns, prefix string) []string {
	t.Helper()
	evs, err := e.c.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "type=Warning"})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ev := range evs.Items {
		if ev.InvolvedObject.Kind == "Pod" && strings.HasPrefix(ev.InvolvedObject.Name, prefix) &&
			(ev.Reason == "Failed" || ev.Reason == "ErrImagePull" || ev.Reason == "BackOff") {
			out = append(out, fmt.Sprintf("%s %s: %s", ev.InvolvedObject.Name, ev.Reason, ev.Message))
		}
	}
	return out
}

// tenantCredentials creates ns's own upstream credentials: the
// kubernetes.io/dockerconfigjson Secret a tenant adds for its private
// upstream repositories.
func (e *clusterEnv) tenantCredentials(t *testing.T, ns, user, pass string) {
	t.Helper()
	cfg, err := json.Marshal(map[string]any{"auths": map[string]any{e.upstream.Host: map[string]string{"username": user, "password": pass}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.c.Client.CoreV1().Secrets(ns).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: kubecontract.UpstreamCredentialsSecretName},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: cfg},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// removeFromNode deletes pod ns/name and removes its image and one of its
// layers from the node, so that the next pull of that layer goes through
// an edge again.
func (e *clusterEnv) removeFromNode(t *testing.T, ns, name, image, layer string) {
	t.Helper()
	ctx := context.Background()
	if err := e.c.Client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "pod "+ns+"/"+name+" gone", clusterTimeout, func() bool {
		_, err := e.c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		return err != nil
	}, nil)
	// The container is removed a moment after the pod object is gone.
	waitUntil(t, "image "+image+" removed from the node", clusterTimeout, func() bool {
		_, err := e.c.Containerd.Crictl(t, "rmi", image)
		return err == nil
	}, nil)
	waitUntil(t, "layer "+layer+" gone from the node's content store", clusterTimeout, func() bool {
		out, err := e.c.Containerd.Ctr(t, "--namespace", "k8s.io", "content", "ls", "-q")
		return err == nil && !strings.Contains(string(out), layer)
	}, nil)
}

// mirrorCertSecret is the kubernetes.io/tls Secret the mirror serves with.
const mirrorCertSecret = "mirror-cert"

// mirrorCertificate creates the release namespace and, in it, a TLS Secret
// for the node's address (what clients outside the cluster dial), before
// helm install, so the mirror's pods never wait for it; it returns the CA.
func (e *clusterEnv) mirrorCertificate(t *testing.T) []byte {
	t.Helper()
	ctx := context.Background()
	b, err := certs.Generate(time.Now(), []string{e.c.NodeIP}, certs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	key, err := certs.EncodeKey(b.Serving.Key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: releaseNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = e.c.Client.CoreV1().Secrets(releaseNS).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: mirrorCertSecret},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: certs.EncodeCertificates(b.Serving.Cert), corev1.TLSPrivateKeyKey: key},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return certs.EncodeCertificates(b.CA.Cert)
}
