package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// checkMirror: the chart's cluster-wide mirror (mirror.enabled) is an
// edge in the release namespace behind a NodePort, here serving TLS with a
// certificate from a Secret (mirror.tls.secretName). From outside the
// cluster (the test's host, through the node's address): a containerd
// client with a hosts.toml mirror for docker.io pulls a Docker Hub-named
// image through it; skopeo pulls a prefixed name; without the mirror's
// token both get 401; and the mirror, a tenant of its own, does not serve
// team-a's private image although the shared copy exists.
func (e *clusterEnv) checkMirror(t *testing.T, hub *harness.NodeUpstream) {
	t.Helper()
	ctx := context.Background()
	e.waitDeploymentReady(t, releaseNS, kubecontract.EdgeName)
	svc, err := e.c.Client.CoreV1().Services(releaseNS).Get(ctx, kubecontract.EdgeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mirror := fmt.Sprintf("%s:%d", e.c.NodeIP, svc.Spec.Ports[0].NodePort)
	sec, err := e.c.Client.CoreV1().Secrets(releaseNS).Get(ctx, kubecontract.PullSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Auths map[string]struct{ Username, Password string }
	}
	if err := json.Unmarshal(sec.Data[corev1.DockerConfigJsonKey], &cfg); err != nil || len(cfg.Auths) != 1 {
		t.Fatalf("mirror pull Secret: %v %v", err, cfg)
	}
	var user, token string
	for _, a := range cfg.Auths {
		user, token = a.Username, a.Password
	}

	// The mirror serves TLS (mirror.tls.secretName): clients trust its CA.
	caDir := t.TempDir()
	caFile := filepath.Join(caDir, "ca.crt")
	if err := os.WriteFile(caFile, e.mirrorCA, 0o644); err != nil {
		t.Fatal(err)
	}

	// containerd as a client outside the cluster, with a hosts.toml mirror.
	hosts := t.TempDir()
	if err := os.MkdirAll(filepath.Join(hosts, "docker.io"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The mirror is also the server: no request may leave for the real
	// Docker Hub (these machines reach no internet, and tests stay on
	// their own addresses). The [host] entry is tried first, with
	// containerd's ?ns=docker.io.
	toml := fmt.Sprintf("server = \"https://%s\"\nca = %q\n\n[host.\"https://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = %q\n", mirror, caFile, mirror, caFile)
	if err := os.WriteFile(filepath.Join(hosts, "docker.io", "hosts.toml"), []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	before := hub.BlobGETs(t, "library/app")
	if out, err := e.c.Containerd.Ctr(t, "images", "pull", "--hosts-dir", hosts, "--user", user+":"+token, "docker.io/library/app:v1"); err != nil {
		t.Fatalf("ctr pull docker.io/library/app:v1 through the mirror (hosts.toml): %v\n%s", err, out)
	}
	if hub.BlobGETs(t, "library/app") == before {
		t.Errorf("the mirror pull fetched no blob from the Docker Hub stand-in; was it served at all?")
	}
	if out, err := e.c.Containerd.Ctr(t, "images", "pull", "--hosts-dir", hosts, "docker.io/library/app:v1"); err == nil || !strings.Contains(fmt.Sprint(err)+string(out), "401") {
		t.Errorf("ctr pull through the mirror without its token: err %v, want a 401\n%s", err, out)
	}

	// skopeo with a prefixed name, as a Docker client would pull.
	creds := []string{"--cert-dir", caDir, "--creds", user + ":" + token}
	if out, err := harness.Skopeo(t, append([]string{"inspect", "--raw"}, append(creds, "docker://"+mirror+"/lab/lab/app:v1")...)...); err != nil {
		t.Errorf("skopeo inspect of a prefixed name through the mirror: %v\n%s", err, out)
	}
	if out, err := harness.Skopeo(t, "inspect", "--raw", "--cert-dir", caDir, "--no-creds", "docker://"+mirror+"/lab/lab/app:v1"); err == nil || !strings.Contains(fmt.Sprint(err)+string(out), "unauthorized") {
		t.Errorf("skopeo without the mirror's token: err %v, want 401\n%s", err, out)
	}
	// team-a's private image: the shared copy exists, the mirror has no
	// proof (no credentials of its own), the upstream refuses it.
	if out, err := harness.Skopeo(t, append([]string{"inspect", "--raw"}, append(creds, "docker://"+mirror+"/lab/lab/secret:v1")...)...); err == nil {
		t.Errorf("the mirror served team-a's private image:\n%s", out)
	}
}
