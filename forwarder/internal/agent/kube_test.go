package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/forwarder/internal/relay"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// TestKubeForwardsEdgeServices runs the agent on a real kube-apiserver as
// a ServiceAccount holding exactly PolicyRules, with a real docker-registry
// standing in for each namespace's edge behind its "ClusterIP" (the test's
// dial maps ClusterIPs to loopback, as the node's Service routing would):
// an image pulls through 127.0.0.1:<nodePort> of each edge Service; a
// Service with the edge labels but another name, and one named like the
// edge without its labels, get no listener; a deleted edge Service's port
// closes; a port another process holds at start (the old pod of a
// replaced forwarder) is taken, and probed again, once it is free; the
// loopback status endpoint reports the node's path.
func TestKubeForwardsEdgeServices(t *testing.T) {
	testkit.Integration(t)
	t.Parallel()
	k := harness.StartKube(t)
	regA, regB := harness.StartDockerRegistry(t), harness.StartDockerRegistry(t)
	imgA := harness.PushImage(t, regA.Addr, "app", "v1", types.OCIManifestSchema1, 2, 256<<10)
	imgB := harness.PushImage(t, regB.Addr, "app", "v1", types.OCIManifestSchema1, 2, 256<<10)
	ctx := t.Context()
	admin := k.Client

	svc := map[string]*corev1.Service{}
	for _, c := range []struct {
		ns, name string
		labelled bool
	}{
		{"team-a", kubecontract.EdgeName, true}, {"team-b", kubecontract.EdgeName, true},
		{"team-a", "evil", true}, {"team-c", kubecontract.EdgeName, false},
	} {
		if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: c.ns}}, metav1.CreateOptions{}); err != nil && !isExists(err) {
			t.Fatal(err)
		}
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: c.name}, Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": "edge"},
			Ports: []corev1.ServicePort{{Protocol: corev1.ProtocolTCP, Port: 5000}},
		}}
		if c.labelled {
			s.Labels = map[string]string{kubecontract.ManagedByLabel: kubecontract.ManagedByValue, kubecontract.ComponentLabel: kubecontract.EdgeComponent}
		}
		s, err := admin.CoreV1().Services(c.ns).Create(ctx, s, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svc[c.ns+"/"+c.name] = s
	}
	// The node's Service routing: each edge ClusterIP:5000 reaches its
	// namespace's registry. Any other dial is a failure of the test.
	routes := map[netip.AddrPort]string{
		clusterAddr(t, svc["team-a/selfhost-edge"]): regA.Addr,
		clusterAddr(t, svc["team-b/selfhost-edge"]): regB.Addr,
	}
	var mu sync.Mutex
	var stray []netip.AddrPort
	dial := func(ctx context.Context, target netip.AddrPort) (*net.TCPConn, error) {
		to, ok := routes[target]
		if !ok {
			mu.Lock()
			stray = append(stray, target)
			mu.Unlock()
			return nil, fmt.Errorf("not an edge ClusterIP: %s", target)
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", to)
		if err != nil {
			return nil, err
		}
		return c.(*net.TCPConn), nil
	}

	// A replaced forwarder's old pod still holds team-a's port (here: a
	// registry answering on it) when the agent starts.
	old := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusUnauthorized) }),
		ReadHeaderTimeout: 5 * time.Second}
	oldLn, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(int(svc["team-a/selfhost-edge"].Spec.Ports[0].NodePort)))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = old.Serve(oldLn) }()
	t.Cleanup(func() { _ = old.Close() })

	logs := &testkit.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	rl := relay.New(relay.Options{Dial: dial, Logger: log})
	a, err := New(Options{Client: forwarderClient(t, k), Relay: rl, ProbeWait: time.Second, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		if err := rl.Close(cctx); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("log:\n%s", logs)
		}
	})
	status := httptest.NewServer(a.Handler())
	t.Cleanup(status.Close)

	portA := int(svc["team-a/selfhost-edge"].Spec.Ports[0].NodePort)
	testkit.WaitFor(t, "team-a's port answered by its old holder", time.Minute, func() error {
		st := a.Status()
		for _, p := range st.Ports {
			if p.NodePort == portA && !p.Listening && p.BindError != "" && p.Path == relay.PathNodePort && st.Ready {
				return nil
			}
		}
		return fmt.Errorf("status %+v", st)
	})
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "both edge Services forwarded, the node path found", time.Minute, func() error {
		st := a.Status()
		if !st.Ready || st.Path != relay.PathForwarder || len(st.Ports) != 2 {
			return fmt.Errorf("status %+v", st)
		}
		for _, p := range st.Ports {
			if !p.Listening || p.Path != relay.PathForwarder {
				return fmt.Errorf("status %+v", st)
			}
		}
		return nil
	})
	if code, body := get(t, status.URL+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz: %d %s", code, body)
	}

	for _, c := range []struct {
		svc string
		img harness.Image
	}{{"team-a/selfhost-edge", imgA}, {"team-b/selfhost-edge", imgB}} {
		ref := "127.0.0.1:" + strconv.Itoa(int(svc[c.svc].Spec.Ports[0].NodePort)) + "/app@" + c.img.Digest
		blobs := harness.CranePullOCI(t, ref)
		for _, d := range c.img.Blobs() {
			if _, ok := blobs[d]; !ok {
				t.Fatalf("%s: blob %s missing from the pull (crane verified the others)", c.svc, d)
			}
		}
	}
	for _, name := range []string{"team-a/evil", "team-c/selfhost-edge"} {
		if err := refused(svc[name]); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	if err := admin.CoreV1().Services("team-b").Delete(ctx, kubecontract.EdgeName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "team-b's port closed", time.Minute, func() error { return refused(svc["team-b/selfhost-edge"]) })
	if st := a.Status(); len(st.Ports) != 1 || st.Ports[0].Service != "team-a/selfhost-edge" || !st.Ready {
		t.Fatalf("status after the delete: %+v", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(stray) != 0 {
		t.Fatalf("dialled targets that are no edge: %v", stray)
	}
}

func clusterAddr(t *testing.T, s *corev1.Service) netip.AddrPort {
	t.Helper()
	ip, err := netip.ParseAddr(s.Spec.ClusterIP)
	if err != nil {
		t.Fatal(err)
	}
	return netip.AddrPortFrom(ip, uint16(s.Spec.Ports[0].Port))
}

// refused: nothing listens on s's node port on loopback.
func refused(s *corev1.Service) error {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(int(s.Spec.Ports[0].NodePort)), 5*time.Second)
	if errors.Is(err, syscall.ECONNREFUSED) {
		return nil
	}
	if c != nil {
		_ = c.Close()
	}
	return fmt.Errorf("node port %d still answers (%v)", s.Spec.Ports[0].NodePort, err)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func isExists(err error) bool {
	var s interface{ Status() metav1.Status }
	return errors.As(err, &s) && s.Status().Reason == metav1.StatusReasonAlreadyExists
}

// forwarderClient is a ServiceAccount's client bound to exactly
// PolicyRules (deploy/rbac.yaml has the same).
func forwarderClient(t *testing.T, k *harness.Kube) kubernetes.Interface {
	t.Helper()
	const ns, name = "selfhost-system", "selfhost-forwarder"
	token := k.ServiceAccountToken(t, ns, name, nil, 0)
	ctx := t.Context()
	if _, err := k.Client.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: PolicyRules()}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name}},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	user, groups := harness.ServiceAccountUser(ns, name)
	k.WaitAllowed(t, user, groups, &authorizationv1.ResourceAttributes{Verb: "watch", Resource: "services"})
	return k.ClientFor(t, token)
}
