package leader

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// kubeCluster is a real kube-apiserver; a crashed candidate's client
// fails every request.
type kubeCluster struct{ k *harness.Kube }

func (c kubeCluster) admin() kubernetes.Interface { return c.k.Client }

func (c kubeCluster) candidateClient(t *testing.T) (kubernetes.Interface, func(string)) {
	var dead atomic.Bool
	cfg := rest.CopyConfig(c.k.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if dead.Load() {
				return nil, errors.New("crashed")
			}
			return rt.RoundTrip(r)
		})
	})
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return client, func(string) { dead.Store(true) }
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestKubeElection runs the elections against a real kube-apiserver: a
// stopped leader hands over, a crashed one is replaced after its lease
// expires, and a leader whose Lease is given to another holder stops.
func TestKubeElection(t *testing.T) {
	t.Parallel()
	k := harness.StartKube(t)
	if _, err := k.Client.CoreV1().Namespaces().Create(t.Context(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cl := kubeCluster{k}
	t.Run("handover on stop", func(t *testing.T) { testHandover(t, cl, "stop", false) })
	t.Run("handover on crash", func(t *testing.T) { testHandover(t, cl, "crash", true) })
	t.Run("taken over", func(t *testing.T) { testTakenOver(t, cl, "taken") })
	t.Run("release denied is logged", func(t *testing.T) { testReleaseDenied(t, k) })
}

// testReleaseDenied: an elector holding exactly PolicyRules leads; its
// RoleBinding is deleted (an uninstall that removed the RBAC first); on
// stop it cannot read the Lease to release it and says so instead of
// leaving a successor to wait a lease duration without a word.
func testReleaseDenied(t *testing.T, k *harness.Kube) {
	ctx := t.Context()
	const sa, lease = "elector-denied", "denied"
	token := k.ServiceAccountToken(t, testNS, sa, nil, 0)
	rbac := k.Client.RbacV1()
	if _, err := rbac.Roles(testNS).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: sa}, Rules: PolicyRules(lease)}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rbac.RoleBindings(testNS).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: sa},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: testNS, Name: sa}},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: sa},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	user, groups := harness.ServiceAccountUser(testNS, sa)
	k.WaitAllowed(t, user, groups, &authorizationv1.ResourceAttributes{Namespace: testNS, Verb: "create", Group: "coordination.k8s.io", Resource: "leases"})
	logs := &testkit.LogBuffer{}
	e, err := New(k.ClientFor(t, token), testNS, lease, slog.New(slog.NewTextHandler(logs, nil)), WithPodName("cp-denied"), fast())
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var inside atomic.Bool
	done := make(chan error, 1)
	go func() {
		done <- e.Run(runCtx, func(ctx context.Context) { inside.Store(true); <-ctx.Done(); inside.Store(false) })
	}()
	waitFor(t, "cp-denied to lead", inside.Load)
	if err := rbac.RoleBindings(testNS).Delete(ctx, sa, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the binding to be gone from the authorizer", func() bool {
		sar, err := k.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{User: user, Groups: groups, ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: testNS, Verb: "get", Group: "coordination.k8s.io", Resource: "leases", Name: lease,
			}},
		}, metav1.CreateOptions{})
		return err == nil && !sar.Status.Allowed
	})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if logs.Count("lease not released") == 0 || logs.Count("forbidden") == 0 {
		t.Fatalf("stopping without RBAC logged no failed release:\n%s", logs)
	}
}
