package e2e

// gRPC TLS in-cluster (docs/kubernetes.md, "TLS between edges and the
// control plane") and the control plane's HTTP port: the real control
// plane in in-cluster mode against a real kube-apiserver serves gRPC with
// a certificate of its CA, writes the CA ConfigMap into the opted-in
// namespace and mounts it into the edge's Deployment; the real edge
// binary with that CA file connects, verifying the server name; a wrong
// CA or server name is refused with a clear log line; a CA rotation keeps
// the connected edge connected, and after the CA file follows the
// ConfigMap (kubelet's job) the edge reconnects. /metrics is scraped from
// the running control plane.

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/certs"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/webhookconfig"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// The CA ConfigMap and where the edge mounts it
// (controlplane/internal/controller).
const (
	caConfigMap = "selfhost-controlplane-ca"
	caPath      = "/var/run/k8s-selfhost-repo/control-plane-ca/ca.crt"
)

func TestKubernetesGRPCTLS(t *testing.T) {
	t.Parallel()
	e := newKubeEnv(t)
	ctx := context.Background()
	const ns = "team-tls"
	// The certificate names the Service's names and 127.0.0.1, the host
	// this test's edges dial. The TLS Secret is re-read every second.
	cp := e.startControlPlane(t, "cp-tls-0", "--grpc-tls=on", "--edge-control-plane", "127.0.0.1:9090",
		"--grpc-service", "selfhost-controlplane", "--tls-sync-interval", "1s", "--tls-ca-propagation", "3s")
	e.labelNamespace(t, ns, kubecontract.OptInValue)
	e.waitEdgeObjects(t, ns)
	e.markEdgeReady(t, ns)

	// --- the CA ConfigMap, labelled like the other edge objects, and the
	// edge Deployment mounting it.
	caPEM := e.waitCAConfigMap(t, ns, 1)
	dep, err := e.kube.Client.AppsV1().Deployments(ns).Get(ctx, kubecontract.EdgeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec := dep.Spec.Template.Spec
	if !slices.Contains(spec.Containers[0].Args, "--control-plane-ca-file="+caPath) {
		t.Errorf("edge args %q lack --control-plane-ca-file=%s", spec.Containers[0].Args, caPath)
	}
	if !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool {
		return v.ConfigMap != nil && v.ConfigMap.Name == caConfigMap
	}) {
		t.Errorf("edge volumes %v lack the CA ConfigMap", spec.Volumes)
	}

	// --- the edge verifies the control plane with the CA and connects.
	dir := t.TempDir()
	caFile, tokenFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "token")
	writeFile(t, caFile, caPEM)
	writeFile(t, tokenFile, []byte(e.kube.ServiceAccountToken(t, ns, kubecontract.EdgeName, []string{edgeAudience}, time.Hour)))
	edgeArgs := func(cpAddr, ca string) []string {
		return []string{"--namespace", ns, "--pod-name", "edge-tls", "--control-plane", cpAddr,
			"--control-plane-token-file", tokenFile, "--control-plane-ca-file", ca, "--log-level", "debug"}
	}
	edge := harness.StartEdge(t, edgeArgs(cp.Addr, caFile)...)
	connected := func(r harness.EdgeReadiness) bool { return r.ControlPlane == "connected" && r.ConfigVersion != "" }
	edge.WaitReadiness(t, "the edge connected over TLS", kubeTimeout, connected)

	// --- metrics of the running control plane.
	e.createPod(t, ns, testPod("tls-app", nil), true)
	e.createPod(t, ns, testPod("opted-out", map[string]string{kubecontract.OptOutAnnotation: "false"}), true)
	metric := func(name string, labels map[string]string) float64 { return cp.Metric(t, name, labels) }
	wantMetrics := []struct {
		name   string
		labels map[string]string
		min    float64
	}{
		{"controlplane_edges_connected", map[string]string{"namespace": ns}, 1},
		{"controlplane_config_pushes_total", map[string]string{"namespace": ns}, 1},
		{"controlplane_config_acks_total", map[string]string{"namespace": ns, "result": "ack", "reason": "none"}, 1},
		{"controlplane_grpc_connections", nil, 1},
		{"controlplane_grpc_connections_total", nil, 1},
		{"controlplane_reconciles_total", map[string]string{"result": "success"}, 1},
		{"controlplane_reconcile_duration_seconds_count", nil, 1},
		{"controlplane_webhook_admissions_total", map[string]string{"outcome": "rewritten"}, 1},
		{"controlplane_webhook_admissions_total", map[string]string{"outcome": "skipped"}, 1},
	}
	var missing []string
	waitUntil(t, "control plane metrics", kubeTimeout, func() bool {
		missing = nil
		for _, w := range wantMetrics {
			if v := metric(w.name, w.labels); v < w.min {
				missing = append(missing, fmt.Sprintf("%s%v = %v", w.name, w.labels, v))
			}
		}
		return len(missing) == 0
	}, func() string { return strings.Join(missing, "; ") })
	if v := metric("controlplane_edges_connected", map[string]string{"namespace": ns}); v != 1 {
		t.Errorf("controlplane_edges_connected{namespace=%q} = %v, want 1", ns, v)
	}

	// --- a wrong server name and a wrong CA are refused, and the edge
	// says why.
	other, err := certs.NewCA(time.Now(), certs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	otherCA := filepath.Join(dir, "other.crt")
	writeFile(t, otherCA, certs.EncodeCertificates(other.Cert))
	_, port, _ := strings.Cut(cp.Addr, ":")
	for _, bad := range []struct{ name, addr, ca, wantLog string }{
		{"wrong server name", "localhost:" + port, caFile, "does not name the server name localhost"},
		{"wrong CA", cp.Addr, otherCA, "is not signed by a CA in " + otherCA},
	} {
		b := harness.StartEdge(t, edgeArgs(bad.addr, bad.ca)...)
		waitUntil(t, bad.name+": refusal in the edge log", kubeTimeout, func() bool {
			return strings.Contains(b.Proc.LogTail(256<<10), bad.wantLog)
		}, func() string { return b.Proc.LogTail(4 << 10) })
		if r := b.Readiness(t); r.ControlPlane == "connected" {
			t.Errorf("%s: the edge connected: %+v", bad.name, r)
		}
		b.Stop()
	}

	// --- CA rotation: make the stored CA key unusable; the keeper makes a
	// new CA, keeps trusting the old one for the overlap, and the
	// ConfigMap publishes both. The connected edge stays on its stream.
	edgeConnects := func() int {
		n := 0
		for _, line := range strings.Split(cp.Proc.LogTail(64<<20), "\n") {
			if strings.Contains(line, `"msg":"edge connected"`) && strings.Contains(line, `"pod":"edge-tls"`) {
				n++
			}
		}
		return n
	}
	connects := edgeConnects()
	oldCA := serverCertIssuer(t, cp.Addr)
	secrets := e.kube.Client.CoreV1().Secrets(releaseNS)
	sec, err := secrets.Get(ctx, webhookconfig.DefaultSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec.Data[webhookconfig.KeyCAKey] = []byte("broken")
	if _, err := secrets.Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	bundle := e.waitCAConfigMap(t, ns, 2)
	waitUntil(t, "the control plane presenting the new CA's certificate", kubeTimeout, func() bool {
		return serverCertIssuer(t, cp.Addr) != oldCA
	}, nil)
	if r := edge.Readiness(t); !connected(r) {
		t.Fatalf("edge after the rotation: %+v", r)
	}
	if n := edgeConnects(); n != connects {
		t.Errorf("the edge connected %d times before the rotation, %d times after; want its stream kept", connects, n)
	}

	// --- the CA file follows the ConfigMap (kubelet's job), the control
	// plane restarts: the edge reconnects, verifying the new CA.
	writeFile(t, caFile, bundle)
	cp.Restart(t)
	edge.WaitReadiness(t, "the edge reconnected after the CA rotation", kubeTimeout, connected)
	waitUntil(t, "the edge counted again", kubeTimeout, func() bool {
		return metric("controlplane_edges_connected", map[string]string{"namespace": ns}) == 1
	}, nil)

	// --- drift repair and cleanup cover the CA ConfigMap.
	cms := e.kube.Client.CoreV1().ConfigMaps(ns)
	if err := cms.Delete(ctx, caConfigMap, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitCAConfigMap(t, ns, 2)
	e.labelNamespace(t, ns, "")
	waitUntil(t, "the CA ConfigMap deleted with the label", kubeTimeout, func() bool {
		_, err := cms.Get(ctx, caConfigMap, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, nil)
}

// waitCAConfigMap waits until ns's CA ConfigMap holds n certificates
// and the controller's labels, and returns its ca.crt.
func (e *kubeEnv) waitCAConfigMap(t *testing.T, ns string, n int) []byte {
	t.Helper()
	var pem []byte
	var why string
	waitUntil(t, "CA ConfigMap in "+ns, kubeTimeout, func() bool {
		cm, err := e.kube.Client.CoreV1().ConfigMaps(ns).Get(context.Background(), caConfigMap, metav1.GetOptions{})
		if err != nil {
			why = err.Error()
			return false
		}
		if cm.Labels[kubecontract.ManagedByLabel] != kubecontract.ManagedByValue {
			why = "labels " + strings.Join(slices.Sorted(mapKeys(cm.Labels)), ",")
			return false
		}
		cs, err := certs.ParseCertificates([]byte(cm.Data["ca.crt"]))
		if err != nil || len(cs) != n {
			why = "ca.crt does not hold the expected certificates"
			return false
		}
		pem = []byte(cm.Data["ca.crt"])
		return true
	}, func() string { return why })
	return pem
}

// serverCertIssuer identifies (by key ID) the issuer of the certificate the control plane
// presents (not verified: this only looks).
func serverCertIssuer(t *testing.T, addr string) string {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}) //nolint:gosec // inspection only
	if err != nil {
		t.Fatalf("TLS dial %s: %v", addr, err)
	}
	defer func() { _ = conn.Close() }() // the handshake is all this looks at
	leaf := conn.ConnectionState().PeerCertificates[0]
	return hex.EncodeToString(leaf.AuthorityKeyId)
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
