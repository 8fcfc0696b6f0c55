package controller

import (
	"context"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/leader"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// replica is one control-plane replica: informers always, the
// controller's Run only while its elector leads.
type replica struct {
	kc     *kubeController
	e      *leader.Elector
	cancel context.CancelFunc
	done   chan struct{}
}

func startReplica(t *testing.T, k *harness.Kube, name string) *replica {
	t.Helper()
	client := controlPlaneClient(t, k, name)
	kc := startKubeController(t, k, client)
	e, err := leader.New(client, releaseNS, kubecontract.LeaseName, nil,
		leader.WithPodName(name), leader.WithTimings(2*time.Second, time.Second, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	r := &replica{kc: kc, e: e, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		err := e.Run(ctx, func(ctx context.Context) {
			if err := kc.c.Run(ctx); err != nil {
				t.Errorf("%s: controller Run: %v", name, err)
			}
		})
		if err != nil {
			t.Errorf("%s: elector Run: %v", name, err)
		}
	}()
	t.Cleanup(r.stop)
	return r
}

// stop ends the replica (a graceful shutdown) and waits for it.
func (r *replica) stop() {
	r.cancel()
	<-r.done
}

func (r *replica) leading() bool { return r.e.IsLeader() && r.kc.c.running() }

// TestKubeLeaderStopsWriting: only the leader's controller writes; a
// replica whose Lease is given to another holder stops reconciling (a
// namespace labelled then gets nothing, a deleted object is not
// recreated); when a replica stops, the other one takes over.
func TestKubeLeaderStopsWriting(t *testing.T) {
	t.Parallel()
	k := harness.StartKube(t)
	admin := k.Client
	a := startReplica(t, k, "cp-a")
	b := startReplica(t, k, "cp-b")
	waitFor(t, "a leader", func() bool { return a.leading() || b.leading() })

	createNamespace(t, admin, optedIn("team-x"))
	waitFor(t, "team-x's edge", func() bool { return edgeReady(t, admin, "team-x") })

	leases := admin.CoordinationV1().Leases(releaseNS)
	editLease(t, func(l *coordinationv1.Lease) {
		l.Spec.HolderIdentity = ptr.To("intruder")
		l.Spec.RenewTime = ptr.To(metav1.NewMicroTime(time.Now()))
		l.Spec.LeaseDurationSeconds = ptr.To[int32](3600)
	}, leases)
	waitFor(t, "both replicas to stop reconciling", func() bool {
		return !a.e.IsLeader() && !b.e.IsLeader() && !a.kc.c.running() && !b.kc.c.running()
	})

	createNamespace(t, admin, optedIn("team-y"))
	if err := admin.AppsV1().Deployments("team-x").Delete(t.Context(), kubecontract.EdgeName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both caches to see team-y and team-x's deletion", func() bool {
		for _, r := range []*replica{a, b} {
			ns, err := r.kc.c.namespaces.Get("team-y")
			if err != nil || !OptedIn(ns) {
				return false
			}
			if _, err := r.kc.c.deployments.Deployments("team-x").Get(kubecontract.EdgeName); !apierrors.IsNotFound(err) {
				return false
			}
		}
		return true
	})
	if n := objectsOf(t, admin, "team-y").count(); n != 0 {
		t.Fatalf("%d objects written for team-y while the intruder holds the lease", n)
	}
	if objectsOf(t, admin, "team-x").dep != nil {
		t.Fatal("team-x's Deployment recreated while the intruder holds the lease")
	}
	if h := leaseHolder(t, leases); h != "intruder" {
		t.Fatalf("lease holder %q during the check, want the intruder", h)
	}

	// The intruder goes: a replica leads again and catches up.
	if err := leases.Delete(t.Context(), kubecontract.LeaseName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a leader again", func() bool { return a.leading() || b.leading() })
	waitFor(t, "team-y's edge and team-x's Deployment", func() bool {
		return edgeReady(t, admin, "team-y") && edgeReady(t, admin, "team-x")
	})

	// The leader stops: the other replica takes over.
	first, second := a, b
	if b.leading() {
		first, second = b, a
	}
	first.stop()
	waitFor(t, "the other replica to lead", func() bool { return second.leading() })
	createNamespace(t, admin, optedIn("team-z"))
	waitFor(t, "team-z's edge", func() bool { return edgeReady(t, admin, "team-z") })
}

func leaseHolder(t *testing.T, leases leaseClient) string {
	t.Helper()
	l, err := leases.Get(t.Context(), kubecontract.LeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ptr.Deref(l.Spec.HolderIdentity, "")
}

type leaseClient interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*coordinationv1.Lease, error)
	Update(ctx context.Context, l *coordinationv1.Lease, opts metav1.UpdateOptions) (*coordinationv1.Lease, error)
}

// editLease applies edit to the Lease, retrying on conflicts (the leader
// renews it concurrently).
func editLease(t *testing.T, edit func(*coordinationv1.Lease), leases leaseClient) {
	t.Helper()
	for {
		l, err := leases.Get(t.Context(), kubecontract.LeaseName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		edit(l)
		if _, err = leases.Update(t.Context(), l, metav1.UpdateOptions{}); err == nil {
			return
		}
		if !apierrors.IsConflict(err) {
			t.Fatal(err)
		}
	}
}
