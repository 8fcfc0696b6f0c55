package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// TestKubernetes is the in-cluster mode's proof on a real kube-apiserver: labelling a
// namespace creates its edge; pods there are rewritten to it; edges
// authenticate with projected tokens and get only their namespace's
// config; pulls need the namespace's token; two replicas elect one leader
// and fail over; a dead webhook never blocks a pod; unlabelling cleans up.
// The steps share one apiserver and run in order.
func TestKubernetes(t *testing.T) {
	t.Parallel()
	e := newKubeEnv(t)
	ctx := context.Background()
	cp1 := e.startControlPlane(t, "cp-1")

	// --- labelling creates the edge; a wrong label value does not.
	e.labelNamespace(t, "team-a", kubecontract.OptInValue)
	e.labelNamespace(t, "team-b", kubecontract.OptInValue)
	e.labelNamespace(t, "wrong-value", "true")
	e.labelNamespace(t, "plain", "")
	a := e.waitEdgeObjects(t, "team-a")
	b := e.waitEdgeObjects(t, "team-b")
	if a.nodePort == b.nodePort || a.token == b.token {
		t.Fatalf("team-a and team-b share a node port (%d, %d) or a pull token", a.nodePort, b.nodePort)
	}
	dep, err := e.kube.Client.AppsV1().Deployments("team-a").Get(ctx, kubecontract.EdgeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkEdgeDeployment(t, dep.Spec.Template.Spec)
	if a.svc.Spec.Type != corev1.ServiceTypeNodePort || a.secret.Type != corev1.SecretTypeDockerConfigJson {
		t.Fatalf("service type %s, secret type %s", a.svc.Spec.Type, a.secret.Type)
	}
	if _, err := e.kube.Client.AppsV1().Deployments("wrong-value").Get(ctx, kubecontract.EdgeName, metav1.GetOptions{}); err == nil {
		t.Fatal("a namespace labelled with the wrong value got an edge")
	}

	// --- the admin API (RBAC-authorised ServiceAccount) sees the namespaces.
	var last harness.GrpcurlResult
	waitUntil(t, "Resolve to rewrite to team-a's edge", kubeTimeout, func() bool {
		last = cp1.AdminCall(t, e.adminToken, "Resolve", `{"namespace":"team-a","image":"nginx"}`)
		return last.Err == nil && strings.Contains(last.Stdout, fmt.Sprintf("127.0.0.1:%d/dockerhub/library/nginx:latest", a.nodePort))
	}, func() string { return last.Output() })
	last = cp1.AdminCall(t, e.adminToken, "GetNamespaceConfig", `{"namespace":"team-a"}`)
	if last.Err != nil || !strings.Contains(last.Stdout, `"hasPullToken": true`) || strings.Contains(last.Output(), a.token) {
		t.Errorf("GetNamespaceConfig team-a (want a pull token, never shown): %v\n%s", last.Err, last.Output())
	}
	unbound := e.kube.ServiceAccountToken(t, "team-a", "nobody", nil, time.Hour)
	if r := cp1.AdminCall(t, unbound, "ListEdges", "{}"); r.Err == nil || !strings.Contains(r.Output(), "PermissionDenied") {
		t.Fatalf("unbound ServiceAccount: %v\n%s", r.Err, r.Output())
	}

	// --- injection: not before the edge is ready, then rewritten.
	notReady := e.createPod(t, "team-a", testPod("early", nil), true)
	if notReady.Spec.Containers[0].Image != "nginx:latest" {
		t.Fatalf("pod rewritten before its edge had a ready endpoint: %s", notReady.Spec.Containers[0].Image)
	}
	e.markEdgeReady(t, "team-a")
	edgeHost := fmt.Sprintf("127.0.0.1:%d", a.nodePort)
	waitUntil(t, "the injector to see team-a's ready edge", kubeTimeout, func() bool {
		p := e.createPod(t, "team-a", testPod("probe", nil), true)
		return strings.HasPrefix(p.Spec.Containers[0].Image, edgeHost+"/")
	}, nil)
	pod := e.createPod(t, "team-a", testPod("web", nil), false)
	want := map[string]string{
		"init": edgeHost + "/dockerhub/library/busybox:latest",
		"web":  edgeHost + "/dockerhub/library/nginx:latest",
		"app":  edgeHost + "/ghcr/org/app@sha256:" + strings.Repeat("ab", 32),
		"own":  "registry.example.com/x/y:1", // unknown registry: untouched
	}
	for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
		if c.Image != want[c.Name] {
			t.Errorf("container %s: image %q, want %q", c.Name, c.Image, want[c.Name])
		}
	}
	var originals map[string]string
	if err := json.Unmarshal([]byte(pod.Annotations[kubecontract.OriginalImagesAnnotation]), &originals); err != nil || originals["containers/web"] != "nginx:latest" {
		t.Errorf("original-images annotation %q (%v)", pod.Annotations[kubecontract.OriginalImagesAnnotation], err)
	}
	if len(pod.Spec.ImagePullSecrets) != 1 || pod.Spec.ImagePullSecrets[0].Name != kubecontract.PullSecretName {
		t.Errorf("imagePullSecrets = %v", pod.Spec.ImagePullSecrets)
	}
	optOut := e.createPod(t, "team-a", testPod("opt-out", map[string]string{kubecontract.OptOutAnnotation: "false"}), false)
	plain := e.createPod(t, "plain", testPod("plain", nil), false)
	for _, p := range []*corev1.Pod{optOut, plain} {
		if p.Spec.Containers[0].Image != "nginx:latest" || len(p.Spec.ImagePullSecrets) != 0 {
			t.Errorf("pod %s/%s was mutated: %s %v", p.Namespace, p.Name, p.Spec.Containers[0].Image, p.Spec.ImagePullSecrets)
		}
	}

	// --- an edge with team-a's projected token gets team-a's config, and
	// pulls need team-a's pull token.
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(e.kube.ServiceAccountToken(t, "team-a", kubecontract.EdgeName, []string{edgeAudience}, time.Hour)), 0o600); err != nil {
		t.Fatal(err)
	}
	edgeA := harness.StartEdge(t, "--namespace", "team-a", "--pod-name", "edge-a",
		"--control-plane", cp1.Addr, "--control-plane-token-file", tokenFile, "--log-level", "debug")
	edgeA.WaitReadiness(t, "team-a config from the control plane", kubeTimeout, func(r harness.EdgeReadiness) bool {
		return r.ControlPlane == "connected" && r.ConfigVersion != ""
	})
	ref := e.img.Ref(edgeA.Addr, "test")
	pull := func(password string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, edgeA.URL+"/v2/test/"+e.img.Repo+"/manifests/"+e.img.Tag, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", string(e.img.MediaType))
		if password != "" {
			req.SetBasicAuth(kubecontract.PullSecretUsername, password)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := pull(""); got != http.StatusUnauthorized {
		t.Errorf("pull without a token: %d, want 401", got)
	}
	if got := pull(b.token); got != http.StatusUnauthorized && got != http.StatusForbidden {
		t.Errorf("pull with team-b's token: %d, want 401 or 403", got)
	}
	if got := pull(a.token); got != http.StatusOK {
		t.Errorf("pull with team-a's token: %d, want 200", got)
	}
	// The same token claiming team-b is refused: the namespace comes from
	// the token, never from the edge's hello.
	edgeB := harness.StartEdge(t, "--namespace", "team-b", "--pod-name", "edge-b-impostor",
		"--control-plane", cp1.Addr, "--control-plane-token-file", tokenFile)
	waitUntil(t, "the impostor edge to be refused", kubeTimeout, func() bool {
		return strings.Contains(edgeB.Proc.LogTail(64<<10), "does not match the token's namespace")
	}, nil)
	if r := edgeB.Readiness(t); r.ControlPlane == "connected" || r.ConfigVersion != "" {
		t.Fatalf("an edge with team-a's token got team-b's config: %+v", r)
	}

	// --- a second replica; one leader; failover when it dies. The second
	// replica serves no webhook (the test's webhook URL names one process).
	cp2 := e.startControlPlane(t, "cp-2", "--webhook-disabled")
	holder := func() string {
		l, err := e.kube.Client.CoordinationV1().Leases(releaseNS).Get(ctx, kubecontract.LeaseName, metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}
	if h := holder(); !strings.HasPrefix(h, "cp-1") {
		t.Fatalf("lease holder %q, want cp-1 (the first replica)", h)
	}
	// An admin change through one replica lives in the state ConfigMap and
	// reaches the other replica.
	if r := cp2.AdminCall(t, e.adminToken, "PutUpstream", `{"upstream":{"prefix":"quay","url":"https://quay.io"}}`); r.Err != nil {
		t.Fatalf("PutUpstream through cp-2: %v\n%s", r.Err, r.Output())
	}
	waitUntil(t, "cp-1 to see the upstream added through cp-2", kubeTimeout, func() bool {
		last = cp1.AdminCall(t, e.adminToken, "ListUpstreams", "{}")
		return last.Err == nil && strings.Contains(last.Stdout, `"prefix": "quay"`)
	}, func() string { return last.Output() })
	if cm, err := e.kube.Client.CoreV1().ConfigMaps(releaseNS).Get(ctx, "selfhost-controlplane-state", metav1.GetOptions{}); err != nil || !strings.Contains(cm.Data["state.json"], "quay.io") {
		t.Fatalf("state ConfigMap after PutUpstream: %v %v", err, cm.Data)
	}
	cp1.Kill()
	waitUntil(t, "cp-2 to take the lease", kubeTimeout, func() bool { return strings.HasPrefix(holder(), "cp-2") },
		func() string { return "holder " + holder() + "; " + leaseString(ctx, e) })
	e.labelNamespace(t, "team-c", kubecontract.OptInValue)
	e.waitEdgeObjects(t, "team-c")

	// --- the webhook is down (cp-1 died): pods are still admitted,
	// untouched (failurePolicy Ignore).
	down := e.createPod(t, "team-a", testPod("while-down", nil), false)
	if down.Spec.Containers[0].Image != "nginx:latest" {
		t.Fatalf("pod admitted while the webhook was down has image %s", down.Spec.Containers[0].Image)
	}

	// --- unlabelling removes everything the controller made.
	e.labelNamespace(t, "team-a", "")
	e.waitEdgeObjectsGone(t, "team-a")
	waitUntil(t, "team-a gone from the admin API", kubeTimeout, func() bool {
		r := cp2.AdminCall(t, e.adminToken, "GetNamespaceConfig", `{"namespace":"team-a"}`)
		return r.Err != nil && strings.Contains(r.Output(), "NotFound")
	}, nil)
}

// checkEdgeDeployment checks the parts of the edge pod that make it work:
// the projected token for the control plane's audience, and args that
// point at the control plane.
func checkEdgeDeployment(t *testing.T, spec corev1.PodSpec) {
	t.Helper()
	if spec.ServiceAccountName != kubecontract.EdgeName || len(spec.Containers) != 1 {
		t.Fatalf("edge pod spec: serviceAccount %q, %d containers", spec.ServiceAccountName, len(spec.Containers))
	}
	args := strings.Join(spec.Containers[0].Args, " ")
	for _, want := range []string{"--control-plane", "selfhost-controlplane." + releaseNS + ".svc:9090", "--control-plane-token-file"} {
		if !strings.Contains(args, want) {
			t.Errorf("edge args %q lack %q", args, want)
		}
	}
	found := false
	for _, v := range spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, s := range v.Projected.Sources {
			if s.ServiceAccountToken != nil && s.ServiceAccountToken.Audience == edgeAudience {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("edge pod has no projected token for audience %s", edgeAudience)
	}
}

func leaseString(ctx context.Context, e *kubeEnv) string {
	l, err := e.kube.Client.CoordinationV1().Leases(releaseNS).Get(ctx, kubecontract.LeaseName, metav1.GetOptions{})
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("lease %+v", coordinationv1.LeaseSpec(l.Spec))
}
