package clusterview

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/configstore"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/controller"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/snapshot"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// memSource is a config.Source that keeps nothing: the view never persists.
type memSource struct{ st *config.State }

func (m memSource) Load(context.Context) (*config.State, error) { return m.st.Clone(), nil }
func (memSource) Save(context.Context, *config.State) error {
	return errors.New("the view must not persist")
}

// fakeEdges is the controller's answer, set by the test.
type fakeEdges struct {
	mu    sync.Mutex
	edges []controller.Edge
}

func (f *fakeEdges) Edges() ([]controller.Edge, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.edges), nil
}
func (*fakeEdges) HasSynced() bool { return true }

func (f *fakeEdges) set(v *View, edges ...controller.Edge) {
	f.mu.Lock()
	f.edges = edges
	f.mu.Unlock()
	v.Changed("")
}

type fixture struct {
	client kubernetes.Interface
	store  *configstore.Store
	view   *View
	edges  *fakeEdges
}

func newFixture(t *testing.T, edges ...controller.Edge) *fixture {
	t.Helper()
	return newFixtureWith(t, nil, edges...)
}

// newFixtureWith is newFixture with a node-access check.
func newFixtureWith(t *testing.T, nodes NodeAccess, edges ...controller.Edge) *fixture {
	t.Helper()
	client := fake.NewClientset()
	st := &config.State{
		Upstreams:  []*selfhostv1.Upstream{{Prefix: "dockerhub", Url: "https://registry-1.docker.io", Hosts: []string{"docker.io"}}},
		Namespaces: map[string]*config.Namespace{},
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := configstore.New(st, memSource{st}, snapshot.Builder{}, log)
	if err != nil {
		t.Fatal(err)
	}
	f := informers.NewSharedInformerFactory(client, 0)
	fe := &fakeEdges{edges: edges}
	v, err := New(Options{ConfigStore: s, Edges: fe, EndpointSlices: f.Discovery().V1().EndpointSlices(), NodeAccess: nodes, Logger: log, Debounce: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f.Start(ctx.Done())
	go func() { _ = v.Run(ctx) }()
	return &fixture{client: client, store: s, view: v, edges: fe}
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
func waitFor(t *testing.T, what string, cond func(*snapshot.Set) bool, s *configstore.Store) {
	t.Helper()
	testkit.WaitFor(t, what, 30*time.Second, func() error {
		if set := s.Current(); !cond(set) {
			return fmt.Errorf("namespaces %v", set.NamespaceNames())
		}
		return nil
	})
}

func TestViewFollowsTheControllersEdges(t *testing.T) {
	t.Parallel()
	f := newFixture(t, controller.Edge{Namespace: "a", Address: "127.0.0.1:30500", PullToken: "tok-a"})
	waitFor(t, "a configured", func(s *snapshot.Set) bool { _, ok := s.Namespace("a"); return ok }, f.store)
	ns, _ := f.store.Current().Namespace("a")
	if ns.EdgeAddress != "127.0.0.1:30500" || ns.Config.GetPolicy().GetPullToken() != "tok-a" {
		t.Fatalf("namespace a: address %q token %q", ns.EdgeAddress, ns.Config.GetPolicy().GetPullToken())
	}

	// New node port (the Service was recreated elsewhere) → new address;
	// b appears.
	f.edges.set(f.view,
		controller.Edge{Namespace: "a", Address: "127.0.0.1:30600", PullToken: "tok-a"},
		controller.Edge{Namespace: "b", Address: "127.0.0.1:30601", PullToken: "tok-b"})
	waitFor(t, "new address and b", func(s *snapshot.Set) bool {
		ns, ok := s.Namespace("a")
		return ok && ns.EdgeAddress == "127.0.0.1:30600" && strings.Join(s.NamespaceNames(), ",") == "a,b"
	}, f.store)

	// a unlabelled → unconfigured.
	f.edges.set(f.view, controller.Edge{Namespace: "b", Address: "127.0.0.1:30601", PullToken: "tok-b"})
	waitFor(t, "a removed", func(s *snapshot.Set) bool { return strings.Join(s.NamespaceNames(), ",") == "b" }, f.store)
}

func TestViewEdgeReadiness(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, controller.Edge{Namespace: "a", Address: "127.0.0.1:30500", PullToken: "tok-a"})
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
	testkit.WaitFor(t, "edge ready", 30*time.Second, func() error {
		e, _ = f.view.Namespace(ctx, "a")
		if e.NotReady != "" {
			return errors.New(e.NotReady)
		}
		return nil
	})
	if len(e.Rules.Upstreams) != 1 || e.Rules.Upstreams[0].Prefix != "dockerhub" {
		t.Fatalf("rules upstreams = %+v", e.Rules.Upstreams)
	}
}

// nodeAccessFunc is a NodeAccess answer set by the test (the real one,
// nodeaccess.Gate, has its own tests on a real apiserver).
type nodeAccessFunc func() string

func (f nodeAccessFunc) NotReady() string { return f() }

// TestViewNodeAccess: a ready edge is not enough while the node-access
// check says no; its reason becomes the injector's warning.
func TestViewNodeAccess(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var mu sync.Mutex
	why := "nodeAccess auto: no ready forwarder (selfhost-forwarder) on node n2"
	f := newFixtureWith(t, nodeAccessFunc(func() string { mu.Lock(); defer mu.Unlock(); return why }),
		controller.Edge{Namespace: "a", Address: "127.0.0.1:30500", PullToken: "tok-a"})
	waitFor(t, "a configured", func(s *snapshot.Set) bool { _, ok := s.Namespace("a"); return ok }, f.store)
	if e, _ := f.view.Namespace(ctx, "a"); !strings.Contains(e.NotReady, "no ready endpoint") {
		t.Fatalf("before endpoints: %q (the edge's own readiness comes first)", e.NotReady)
	}
	if _, err := f.client.DiscoveryV1().EndpointSlices("a").Create(ctx, readySlice("a", true), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the node-access reason", 30*time.Second, func() error {
		if e, _ := f.view.Namespace(ctx, "a"); e.NotReady != why {
			return fmt.Errorf("NotReady %q", e.NotReady)
		}
		return nil
	})
	mu.Lock()
	why = ""
	mu.Unlock()
	if e, _ := f.view.Namespace(ctx, "a"); e.NotReady != "" {
		t.Fatalf("every node has a path: %q", e.NotReady)
	}
}
