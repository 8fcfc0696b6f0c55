package harness_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// TestKube proves that StartKube gives a working apiserver: TokenRequest
// with an audience, TokenReview honouring it, SubjectAccessReview, NodePort
// allocation, RBAC for a ServiceAccount token, WaitAllowed for a new
// binding of it, a kubeconfig file, and a stop and start of the apiserver
// that keeps etcd's data.
func TestKube(t *testing.T) {
	t.Parallel()
	t0 := time.Now()
	k := harness.StartKube(t)
	t.Logf("StartKube took %v", time.Since(t0)) // information only
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const ns, sa = "harness-kube", "tester"
	token := k.ServiceAccountToken(t, ns, sa, []string{"selfhost-test"}, 15*time.Minute)
	if token == "" {
		t.Fatal("empty ServiceAccount token")
	}

	t.Run("TokenReview", func(t *testing.T) {
		for _, tc := range []struct {
			audience string
			want     bool
		}{
			{"selfhost-test", true},
			{"someone-else", false},
		} {
			tr, err := k.Client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
				Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{tc.audience}},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("TokenReview for audience %q: %v", tc.audience, err)
			}
			if tr.Status.Authenticated != tc.want {
				t.Errorf("audience %q: authenticated=%v (error %q), want %v", tc.audience, tr.Status.Authenticated, tr.Status.Error, tc.want)
			}
			if want := "system:serviceaccount:" + ns + ":" + sa; tc.want && tr.Status.User.Username != want {
				t.Errorf("audience %q: user %q, want %q", tc.audience, tr.Status.User.Username, want)
			}
		}
	})

	t.Run("SubjectAccessReview", func(t *testing.T) {
		for _, tc := range []struct {
			user   string
			groups []string
			want   bool
		}{
			{"system:serviceaccount:" + ns + ":" + sa, []string{"system:serviceaccounts"}, false},
			{"someone", []string{"system:masters"}, true},
		} {
			sar, err := k.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
				Spec: authorizationv1.SubjectAccessReviewSpec{
					User:               tc.user,
					Groups:             tc.groups,
					ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "list", Resource: "secrets"},
				},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("SubjectAccessReview for %s: %v", tc.user, err)
			}
			if sar.Status.Allowed != tc.want {
				t.Errorf("%s %v may list secrets: %v (%s), want %v", tc.user, tc.groups, sar.Status.Allowed, sar.Status.Reason, tc.want)
			}
		}
	})

	t.Run("NodePort", func(t *testing.T) {
		svc, err := k.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "np"},
			Spec: corev1.ServiceSpec{
				Type:     corev1.ServiceTypeNodePort,
				Selector: map[string]string{"app": "np"},
				Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create NodePort service: %v", err)
		}
		if np := svc.Spec.Ports[0].NodePort; np < 30000 || np > 32767 {
			t.Errorf("node port %d, want one in 30000-32767", np)
		}
		if !strings.HasPrefix(svc.Spec.ClusterIP, "10.96.") {
			t.Errorf("cluster IP %q, want one in 10.96.0.0/16", svc.Spec.ClusterIP)
		}
	})

	t.Run("RBAC", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			token string
			want  func(error) bool
		}{
			// The apiserver accepts only its own audience (the issuer).
			{"default audience", k.ServiceAccountToken(t, ns, sa, nil, 0), apierrors.IsForbidden},
			{"audience selfhost-test", token, apierrors.IsUnauthorized},
		} {
			_, err := k.ClientFor(t, tc.token).CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
			if !tc.want(err) {
				t.Errorf("%s: ServiceAccount lists secrets without RBAC: err %v", tc.name, err)
			}
		}
	})

	t.Run("WaitAllowed", func(t *testing.T) {
		rbac := k.Client.RbacV1()
		role := &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Name: "secret-lister", Namespace: ns},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"list"}}},
		}
		if _, err := rbac.Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		_, err := rbac.RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: role.Name, Namespace: ns},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: sa}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		user, groups := harness.ServiceAccountUser(ns, sa)
		k.WaitAllowed(t, user, groups, &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "list", Resource: "secrets"})
		// Allowed by the review means allowed to the ServiceAccount's own
		// requests, at once.
		if _, err := k.ClientFor(t, k.ServiceAccountToken(t, ns, sa, nil, 0)).CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); err != nil {
			t.Fatalf("ServiceAccount lists secrets after WaitAllowed: %v", err)
		}
	})

	t.Run("Kubeconfig", func(t *testing.T) {
		b, err := os.ReadFile(k.Kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "server: "+k.URL+"\n") {
			t.Errorf("kubeconfig does not name %s:\n%s", k.URL, b)
		}
	})

	t.Run("RestartAPIServer", func(t *testing.T) {
		t0 := time.Now()
		k.StopAPIServer()
		t.Logf("StopAPIServer took %v", time.Since(t0)) // information only
		if _, err := k.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err == nil {
			t.Fatal("the apiserver answers after StopAPIServer")
		}
		t0 = time.Now()
		k.StartAPIServer(t)
		t.Logf("StartAPIServer took %v", time.Since(t0)) // information only
		if _, err := k.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
			t.Fatalf("namespace %s after the restart: %v", ns, err)
		}
		sv, err := k.Client.Discovery().ServerVersion()
		if err != nil {
			t.Fatal(err)
		}
		if sv.GitVersion != "v1.37.2" {
			t.Errorf("server version %q, want v1.37.2 (build kube-apiserver with the ldflags of test/all.sh)", sv.GitVersion)
		}
	})
}
