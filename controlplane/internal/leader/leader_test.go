package leader

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
)

const (
	testNS    = "selfhost-system"
	testLease = "selfhost-controlplane"
)

// fast timings for tests; only conditions are awaited, never durations.
func fast() Option { return WithTimings(2*time.Second, time.Second, 200*time.Millisecond) }

// cluster gives each candidate a client, and a way to cut one off as if
// its process crashed (no more renewals, no release).
type cluster interface {
	candidateClient(t *testing.T) (client kubernetes.Interface, crash func(identity string))
	admin() kubernetes.Interface
}

// fakeCluster is a fake clientset whose Leases have optimistic
// concurrency (resourceVersion conflicts), as the apiserver's. A crashed
// identity's lease writes (renewals with its name, releases with none)
// fail.
type fakeCluster struct {
	c       *fake.Clientset
	crashed atomic.Pointer[string]
}

func (f *fakeCluster) admin() kubernetes.Interface { return f.c }

func (f *fakeCluster) candidateClient(*testing.T) (kubernetes.Interface, func(string)) {
	return f.c, func(id string) { f.crashed.Store(&id) }
}

func newFakeCluster() *fakeCluster {
	f := &fakeCluster{c: fake.NewClientset()}
	var mu sync.Mutex
	rv := map[string]int{}
	f.c.PrependReactor("*", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		if a.GetVerb() == "update" {
			h := ptr.Deref(a.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease).Spec.HolderIdentity, "")
			if dead := f.crashed.Load(); dead != nil && (h == *dead || h == "") {
				return true, nil, apierrors.NewServiceUnavailable("crashed")
			}
		}
		gr := schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}
		switch a.GetVerb() {
		case "create":
			l := a.(k8stesting.CreateAction).GetObject().(*coordinationv1.Lease)
			if rv[l.Name] != 0 {
				return true, nil, apierrors.NewAlreadyExists(gr, l.Name)
			}
			rv[l.Name] = 1
			l.ResourceVersion = "1"
		case "update":
			l := a.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease)
			if l.ResourceVersion != strconv.Itoa(rv[l.Name]) {
				return true, nil, apierrors.NewConflict(gr, l.Name, nil)
			}
			rv[l.Name]++
			l.ResourceVersion = strconv.Itoa(rv[l.Name])
		case "delete":
			delete(rv, a.(k8stesting.DeleteAction).GetName())
		}
		return false, nil, nil
	})
	return f
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, what, 90*time.Second, cond)
}

// candidate is one elector running in the background; its lead function
// counts how often it started and whether it is inside.
type candidate struct {
	e       *Elector
	cancel  context.CancelFunc
	done    chan error
	starts  atomic.Int32
	inside  atomic.Bool
	overlap *atomic.Int32 // leaders inside at once, shared by candidates
	maxSeen *atomic.Int32
}

func startCandidate(t *testing.T, client kubernetes.Interface, lease, pod string, overlap, maxSeen *atomic.Int32, opts ...Option) *candidate {
	t.Helper()
	e, err := New(client, testNS, lease, nil, append([]Option{WithPodName(pod), fast()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	c := &candidate{e: e, cancel: cancel, done: make(chan error, 1), overlap: overlap, maxSeen: maxSeen}
	go func() {
		c.done <- e.Run(ctx, func(ctx context.Context) {
			c.starts.Add(1)
			n := overlap.Add(1)
			for {
				m := maxSeen.Load()
				if n <= m || maxSeen.CompareAndSwap(m, n) {
					break
				}
			}
			c.inside.Store(true)
			<-ctx.Done()
			c.inside.Store(false)
			overlap.Add(-1)
		})
	}()
	t.Cleanup(func() { c.stop(t) })
	return c
}

func (c *candidate) stop(t *testing.T) {
	t.Helper()
	c.cancel()
	select {
	case err, ok := <-c.done:
		if ok && err != nil {
			t.Errorf("Run: %v", err)
		}
		if ok {
			close(c.done)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func holder(t *testing.T, client kubernetes.Interface, lease string) string {
	t.Helper()
	l, err := client.CoordinationV1().Leases(testNS).Get(t.Context(), lease, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset()
	tests := []struct {
		name      string
		ns, lease string
		opts      []Option
		wantErr   string
	}{
		{"defaults", testNS, testLease, nil, ""},
		{"no namespace", "", testLease, nil, "namespace"},
		{"no name", testNS, "", nil, "name"},
		{"renew over lease", testNS, testLease, []Option{WithTimings(10*time.Second, 15*time.Second, 2*time.Second)}, "lease duration"},
		{"retry over renew", testNS, testLease, []Option{WithTimings(15*time.Second, 2*time.Second, 2*time.Second)}, "renew deadline"},
		{"zero retry", testNS, testLease, []Option{WithTimings(15*time.Second, 10*time.Second, 0)}, "retry period"},
		{"sub-second lease", testNS, testLease, []Option{WithTimings(900*time.Millisecond, 500*time.Millisecond, 100*time.Millisecond)}, "at least 1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e, err := New(client, tt.ns, tt.lease, nil, append([]Option{WithPodName("cp-0")}, tt.opts...)...)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !strings.HasPrefix(e.Identity(), "cp-0_") || len(e.Identity()) <= len("cp-0_") {
					t.Fatalf("identity %q: want the pod name and a random suffix", e.Identity())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New: %v, want an error about %q", err, tt.wantErr)
			}
		})
	}
	a, _ := New(client, testNS, testLease, nil, WithPodName("cp-0"))
	b, _ := New(client, testNS, testLease, nil, WithPodName("cp-0"))
	if a.Identity() == b.Identity() {
		t.Fatal("two electors of one pod name share an identity")
	}
}

// testHandover: a stopped leader releases the lease after its work ended
// and the standby takes over; a crashed one (no release) is replaced once
// its lease expires. Never two leaders at once.
func testHandover(t *testing.T, cl cluster, lease string, crash bool) {
	var overlap, maxSeen atomic.Int32
	client := cl.admin()
	aClient, crashA := cl.candidateClient(t)
	a := startCandidate(t, aClient, lease, "cp-a", &overlap, &maxSeen)
	waitFor(t, "cp-a to lead", func() bool { return a.inside.Load() && a.e.IsLeader() })
	bClient, _ := cl.candidateClient(t)
	b := startCandidate(t, bClient, lease, "cp-b", &overlap, &maxSeen)
	waitFor(t, "cp-b to see the lease held", func() bool { return holder(t, client, lease) == a.e.Identity() })
	if b.e.IsLeader() || b.starts.Load() != 0 {
		t.Fatal("cp-b leads while cp-a holds the lease")
	}
	if crash {
		// A crash: the lease is neither renewed nor released.
		crashA(a.e.Identity())
	}
	a.stop(t)
	if a.e.IsLeader() {
		t.Error("cp-a still reports leading after Run returned")
	}
	waitFor(t, "cp-b to take over", func() bool { return b.inside.Load() && holder(t, client, lease) == b.e.Identity() })
	if n := maxSeen.Load(); n != 1 {
		t.Fatalf("%d leaders at once", n)
	}
}

// The fake-cluster variants run in synctest bubbles: the fake clientset
// does no I/O, so lease durations and retry periods pass on the fake
// clock, in milliseconds. The real-apiserver variants are in
// leader_kube_test.go.
func TestHandoverOnStop(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) { testHandover(t, newFakeCluster(), testLease, false) })
}

func TestHandoverOnCrash(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) { testHandover(t, newFakeCluster(), testLease, true) })
}

// testTakenOver: a leader whose Lease is given to another holder stops
// its work (its context ends) and campaigns again; it leads again once the
// other holder's lease expires.
func testTakenOver(t *testing.T, cl cluster, lease string) {
	var overlap, maxSeen atomic.Int32
	client := cl.admin()
	aClient, _ := cl.candidateClient(t)
	a := startCandidate(t, aClient, lease, "cp-a", &overlap, &maxSeen)
	waitFor(t, "cp-a to lead", func() bool { return a.inside.Load() })
	err := retryOnConflict(t, func() error {
		leases := client.CoordinationV1().Leases(testNS)
		l, err := leases.Get(t.Context(), lease, metav1.GetOptions{})
		if err != nil {
			return err
		}
		l.Spec.HolderIdentity = ptr.To("intruder")
		l.Spec.RenewTime = ptr.To(metav1.NewMicroTime(time.Now()))
		l.Spec.LeaseDurationSeconds = ptr.To[int32](3)
		_, err = leases.Update(t.Context(), l, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "cp-a to stop leading", func() bool { return !a.inside.Load() && !a.e.IsLeader() })
	waitFor(t, "cp-a to lead again after the intruder's lease expired", func() bool {
		return a.starts.Load() == 2 && a.inside.Load() && holder(t, client, lease) == a.e.Identity()
	})
}

func TestTakenOver(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) { testTakenOver(t, newFakeCluster(), testLease) })
}

func TestLeadReturningEarlyStepsDown(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e, err := New(newFakeCluster().c, testNS, testLease, nil, WithPodName("cp-a"), fast())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		var calls atomic.Int32
		done := make(chan error, 1)
		go func() { done <- e.Run(ctx, func(context.Context) { calls.Add(1) }) }()
		waitFor(t, "a second term after the first returned", func() bool { return calls.Load() >= 2 })
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

func retryOnConflict(t *testing.T, fn func() error) error {
	var err error
	for range 50 {
		if err = fn(); !apierrors.IsConflict(err) {
			return err
		}
	}
	return err
}
