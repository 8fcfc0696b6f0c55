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

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// TestKubernetesTenantCredentials: a private repository behind a token
// service that only the tenant of team-a has an account for. The operator
// configures the upstream without credentials; team-a puts its account in
// its Secret selfhost-upstream-credentials; the control plane (under
// deploy/rbac.yaml) gives it to team-a's edge only. Real processes: the
// control plane, two edges, the token proxy and docker-registry.
func TestKubernetesTenantCredentials(t *testing.T) {
	t.Parallel()
	e := newKubeEnv(t)
	const user, password = "team-a-robot", "team-a-robot-password"
	tp := harness.StartTokenProxy(t, e.reg.URL, "-user", user+":"+password, "-private", e.img.Repo)
	e.config = fmt.Sprintf("upstreams:\n  - {prefix: private, url: %q}\n", tp.URL)
	cp := e.startControlPlane(t, "cp-1")
	e.labelNamespace(t, "team-a", kubecontract.OptInValue)
	e.labelNamespace(t, "team-b", kubecontract.OptInValue)
	a, b := e.waitEdgeObjects(t, "team-a"), e.waitEdgeObjects(t, "team-b")

	startEdge := func(ns string) *harness.Edge {
		t.Helper()
		tokenFile := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(tokenFile, []byte(e.kube.ServiceAccountToken(t, ns, kubecontract.EdgeName, []string{edgeAudience}, time.Hour)), 0o600); err != nil {
			t.Fatal(err)
		}
		edge := harness.StartEdge(t, "--namespace", ns, "--pod-name", "edge-"+ns,
			"--control-plane", cp.Addr, "--control-plane-token-file", tokenFile)
		edge.WaitReadiness(t, ns+" config from the control plane", kubeTimeout, func(r harness.EdgeReadiness) bool {
			return r.ControlPlane == "connected" && r.ConfigVersion != ""
		})
		return edge
	}
	pull := func(edge *harness.Edge, pullToken string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, edge.URL+"/v2/private/"+e.img.Repo+"/manifests/"+e.img.Tag, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", string(e.img.MediaType))
		req.SetBasicAuth(kubecontract.PullSecretUsername, pullToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("pull through %s: %v", edge.Addr, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	edgeA, edgeB := startEdge("team-a"), startEdge("team-b")
	if got := pull(edgeA, a.token); got == http.StatusOK {
		t.Fatal("team-a pulled the private repository before it gave credentials")
	}

	auths, err := json.Marshal(map[string]any{"auths": map[string]any{tp.Addr: map[string]string{"username": user, "password": password}}})
	if err != nil {
		t.Fatal(err)
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: kubecontract.UpstreamCredentialsSecretName},
		Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{corev1.DockerConfigJsonKey: auths}}
	if _, err := e.kube.Client.CoreV1().Secrets("team-a").Create(context.Background(), sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var last int
	waitUntil(t, "team-a's edge to pull with team-a's credentials", kubeTimeout, func() bool {
		last = pull(edgeA, a.token)
		return last == http.StatusOK
	}, func() string { return fmt.Sprintf("last status %d\n%s", last, edgeA.Proc.LogTail(16<<10)) })
	// team-b's edge never got them: each edge has its own storage here, so
	// team-b's must ask the upstream, where it has no account.
	if got := pull(edgeB, b.token); got == http.StatusOK {
		t.Fatalf("team-b pulled the private repository with team-a's credentials")
	}
	if r := cp.AdminCall(t, e.adminToken, "GetNamespaceConfig", `{"namespace":"team-a"}`); r.Err != nil || strings.Contains(r.Output(), password) {
		t.Errorf("GetNamespaceConfig team-a shows the tenant's password, or failed: %v", r.Err)
	}
}
