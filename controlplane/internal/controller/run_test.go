package controller

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
)

// waitFor polls cond until it holds; the timeout is generous, the machine
// is noisy.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, what, 60*time.Second, cond)
}

// TestRun runs the controller with real (fake-backed) informers: it
// creates the edge of a namespace labelled before it started, removes it
// when the label goes, stops when its context ends, and runs again.
func TestRun(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset(optedIn("team-a"))
	installNodePorts(client)
	inf := NewInformers(client, 0)
	var mu sync.Mutex
	changed := map[string]int{}
	logs := &testkit.LogBuffer{}
	c, err := New(client, inf, testTemplate(), slog.New(slog.NewTextHandler(logs, nil)),
		WithWorkers(3), WithOnEdgeChange(func(ns string) { mu.Lock(); changed[ns]++; mu.Unlock() }))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	inf.Start(ctx.Done())
	e := &env{t: t, ctx: ctx, client: client, c: c, logs: logs}

	run := func() (stop func()) {
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- c.Run(rctx) }()
		return func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("Run did not return after its context ended")
			}
		}
	}
	stop := run()
	waitFor(t, "the edge of team-a", func() bool { return e.objects("team-a").count() == 5 })
	waitFor(t, "Edge(team-a)", func() bool { _, ok := c.Edge("team-a"); return ok })
	if err := c.Run(ctx); err == nil {
		t.Fatal("a second concurrent Run returned no error")
	}

	// The namespace watch is live once a new namespace shows up in the
	// cache (a fake clientset does not replay events a watch missed).
	if _, err := client.CoreV1().Namespaces().Create(ctx, namespace("probe", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the namespace cache", func() bool { _, err := c.namespaces.Get("probe"); return err == nil })
	ns, err := client.CoreV1().Namespaces().Get(ctx, "team-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	delete(ns.Labels, kubecontract.OptInLabel)
	if _, err := client.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "team-a's edge to go", func() bool { return e.objects("team-a").count() == 0 })
	stop()

	// Leadership regained: Run starts over from the caches.
	ns.Labels[kubecontract.OptInLabel] = kubecontract.OptInValue
	ns.ResourceVersion = ""
	if _, err := client.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the relabelled namespace in the cache", func() bool {
		n, err := c.namespaces.Get("team-a")
		return err == nil && OptedIn(n)
	})
	if n := e.objects("team-a").count(); n != 0 {
		t.Fatalf("%d objects written while not running", n)
	}
	stop = run()
	waitFor(t, "the edge of team-a again", func() bool { return e.objects("team-a").count() == 5 })
	stop()
	mu.Lock()
	defer mu.Unlock()
	if changed["team-a"] == 0 {
		t.Error("OnEdgeChange was never called for team-a")
	}
}
