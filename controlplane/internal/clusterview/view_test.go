package clusterview

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/snapshot"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/store"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/kubecontract"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// memSource is a config.Source that keeps nothing: the view never persists.
type memSource struct{ st *config.State }

func (m memSource) Load(context.Context) (*config.State, error) { return m.st.Clone(), nil }
func (memSource) Save(context.Context, *config.State) error {
	return errors.New("the view must not persist")
}

// testPullToken reads the token from a "token" key: the real format is
// the controller's, tested there.
func testPullToken(s *corev1.Secret) (string, error) {
	t := string(s.Data["token"])
	if t == "" {
		return "", errors.New("no token key")
	}
	return t, nil
}

type fixture struct {
	client kubernetes.Interface
	store  *store.Store
	view   *View
}

func newFixture(t *testing.T, objs ...runtime.Object) *fixture {
	t.Helper()
	client := fake.NewClientset(objs...)
	st := &config.State{
		Upstreams:  []*selfhostv1.Upstream{{Prefix: "dockerhub", Url: "https://registry-1.docker.io", Hosts: []string{"docker.io"}}},
		Namespaces: map[string]*config.Namespace{},
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := store.New(st, memSource{st}, snapshot.Builder{}, log)
	if err != nil {
		t.Fatal(err)
	}
	f := informers.NewSharedInformerFactory(client, 0)
	v, err := New(Options{
		Store: s,
		Informers: Informers{
			Namespaces: f.Core().V1().Namespaces(), Services: f.Core().V1().Services(),
			Secrets: f.Core().V1().Secrets(), EndpointSlices: f.Discovery().V1().EndpointSlices(),
		},
		PullToken: testPullToken,
		Logger:    log,
		Debounce:  time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f.Start(ctx.Done())
	go func() { _ = v.Run(ctx) }()
	return &fixture{client: client, store: s, view: v}
}

func namespace(name string, lbl map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbl}}
}

var optIn = map[string]string{kubecontract.OptInLabel: kubecontract.OptInValue}

func edgeService(ns string, port int32) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: kubecontract.EdgeName},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Port: 5000, NodePort: port}}},
	}
}

func pullSecret(ns, token string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: kubecontract.PullSecretName},
		Data:       map[string][]byte{"token": []byte(token)},
	}
}

func readySlice(ns string, ready bool) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: kubecontract.EdgeName + "-x", Labels: map[string]string{discoveryv1.LabelServiceName: kubecontract.EdgeName}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.5"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
	}
}

// waitFor polls the store until cond holds; generous, because the machine
// is shared.
func waitFor(t *testing.T, what string, cond func(*snapshot.Set) bool, s *store.Store) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond(s.Current()) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; namespaces %v", what, s.Current().NamespaceNames())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestViewConfiguresOnlyCompleteOptedInNamespaces(t *testing.T) {
	t.Parallel()
	f := newFixture(t,
		namespace("a", optIn), edgeService("a", 30500), pullSecret("a", "tok-a"),
		namespace("wrong-value", map[string]string{kubecontract.OptInLabel: "true"}), edgeService("wrong-value", 30501), pullSecret("wrong-value", "tok-w"),
		namespace("no-secret", optIn), edgeService("no-secret", 30502),
		namespace("no-service", optIn), pullSecret("no-service", "tok-s"),
		namespace("plain", nil),
	)
	waitFor(t, "namespace a", func(s *snapshot.Set) bool { _, ok := s.Namespace("a"); return ok }, f.store)
	if got := strings.Join(f.store.Current().NamespaceNames(), ","); got != "a" {
		t.Fatalf("configured namespaces = %s, want a", got)
	}
	ns, _ := f.store.Current().Namespace("a")
	if ns.EdgeAddress != "127.0.0.1:30500" || ns.Config.GetPolicy().GetPullToken() != "tok-a" {
		t.Fatalf("namespace a: address %q token %q", ns.EdgeAddress, ns.Config.GetPolicy().GetPullToken())
	}
}

func TestViewFollowsChanges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, namespace("a", optIn), edgeService("a", 30500), pullSecret("a", "tok-a"))
	waitFor(t, "a configured", func(s *snapshot.Set) bool { _, ok := s.Namespace("a"); return ok }, f.store)

	// New node port (the Service was recreated elsewhere) → new address.
	if _, err := f.client.CoreV1().Services("a").Update(ctx, edgeService("a", 30600), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "new address", func(s *snapshot.Set) bool {
		ns, ok := s.Namespace("a")
		return ok && ns.EdgeAddress == "127.0.0.1:30600"
	}, f.store)

	// Label removed → unconfigured.
	if _, err := f.client.CoreV1().Namespaces().Update(ctx, namespace("a", nil), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a removed", func(s *snapshot.Set) bool { _, ok := s.Namespace("a"); return !ok }, f.store)
}

func TestViewEdgeReadiness(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, namespace("a", optIn), edgeService("a", 30500), pullSecret("a", "tok-a"))
	waitFor(t, "a configured", func(s *snapshot.Set) bool { _, ok := s.Namespace("a"); return ok }, f.store)

	e, ok := f.view.Namespace(ctx, "a")
	if !ok || e.NotReady == "" || e.PullSecret != kubecontract.PullSecretName || e.Rules.EdgeAddress != "127.0.0.1:30500" {
		t.Fatalf("before endpoints: %+v ok=%v", e, ok)
	}
	if _, ok := f.view.Namespace(ctx, "b"); ok {
		t.Fatal("unconfigured namespace b has an edge")
	}
	if _, err := f.client.DiscoveryV1().EndpointSlices("a").Create(ctx, readySlice("a", false), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.DiscoveryV1().EndpointSlices("a").Update(ctx, readySlice("a", true), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		e, _ = f.view.Namespace(ctx, "a")
		if e.NotReady == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("edge never ready: %s", e.NotReady)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if len(e.Rules.Upstreams) != 1 || e.Rules.Upstreams[0].Prefix != "dockerhub" {
		t.Fatalf("rules upstreams = %+v", e.Rules.Upstreams)
	}
}
