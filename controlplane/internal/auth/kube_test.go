package auth_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/auth"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

const (
	kubeEdgeAudience = "k8s-selfhost-repo-controlplane"
	releaseNS        = "selfhost-system"
	tokenTTL         = 15 * time.Minute
)

// TestTokenReviewAgainstKube runs the authenticator as the control plane
// does in-cluster: as a ServiceAccount whose only rights are the
// ClusterRole below, against a real kube-apiserver, with real
// ServiceAccount tokens.
func TestTokenReviewAgainstKube(t *testing.T) {
	t.Parallel()
	k := harness.StartKube(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// What the chart grants the control plane for authentication.
	grant(ctx, t, k, "selfhost-controlplane-auth", []rbacv1.PolicyRule{
		{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
		{APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"subjectaccessreviews"}, Verbs: []string{"create"}},
	}, releaseNS, "controlplane")
	// An admin by RBAC.
	grant(ctx, t, k, "selfhost-admin", []rbacv1.PolicyRule{
		{APIGroups: []string{auth.AdminAPIGroup}, Resources: []string{auth.AdminAPIResource}, Verbs: []string{auth.AdminAPIVerb}},
	}, "ops", "admin")

	cp := k.ClientFor(t, k.ServiceAccountToken(t, releaseNS, "controlplane", nil, tokenTTL))
	var logs testkit.LogBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	authn, err := auth.NewTokenReview(cp, auth.TokenReviewOptions{
		EdgeAudience: kubeEdgeAudience,
		AdminGroups:  []string{"system:serviceaccounts:platform"},
		Log:          log,
	})
	if err != nil {
		t.Fatal(err)
	}

	tokens := map[string]string{
		"edge a":                   k.ServiceAccountToken(t, "team-a", kubecontract.EdgeName, []string{kubeEdgeAudience}, tokenTTL),
		"edge a, default audience": k.ServiceAccountToken(t, "team-a", kubecontract.EdgeName, nil, tokenTTL),
		"edge b":                   k.ServiceAccountToken(t, "team-b", kubecontract.EdgeName, []string{kubeEdgeAudience}, tokenTTL),
		"other SA, edge audience":  k.ServiceAccountToken(t, "team-a", "default", []string{kubeEdgeAudience}, tokenTTL),
		"admin by RBAC":            k.ServiceAccountToken(t, "ops", "admin", nil, tokenTTL),
		"admin by group":           k.ServiceAccountToken(t, "platform", "operator", nil, tokenTTL),
		"unbound":                  k.ServiceAccountToken(t, "ops", "intruder", nil, tokenTTL),
		"garbage":                  "eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl",
	}
	tests := []struct {
		token string
		want  auth.Identity
		err   error
		code  codes.Code // of an admin call
	}{
		{"edge a", auth.Identity{Kind: auth.KindEdge, Namespace: "team-a", Name: "edge/team-a"}, nil, codes.PermissionDenied},
		{"edge b", auth.Identity{Kind: auth.KindEdge, Namespace: "team-b", Name: "edge/team-b"}, nil, codes.PermissionDenied},
		{"edge a, default audience", auth.Identity{}, auth.ErrUnknown, codes.Unauthenticated},
		{"other SA, edge audience", auth.Identity{}, auth.ErrUnknown, codes.Unauthenticated},
		{"admin by RBAC", auth.Identity{Kind: auth.KindAdmin, Name: "admin/system:serviceaccount:ops:admin"}, nil, codes.OK},
		{"admin by group", auth.Identity{Kind: auth.KindAdmin, Name: "admin/system:serviceaccount:platform:operator"}, nil, codes.OK},
		{"unbound", auth.Identity{}, auth.ErrForbidden, codes.PermissionDenied},
		{"garbage", auth.Identity{}, auth.ErrUnknown, codes.Unauthenticated},
	}
	adminCall := auth.UnaryInterceptor(authn, auth.Policy{})
	for _, tc := range tests {
		t.Run(tc.token, func(t *testing.T) {
			id, err := authn.Authenticate(ctx, tokens[tc.token])
			if !errors.Is(err, tc.err) || (tc.err == nil && err != nil) || id != tc.want {
				t.Fatalf("Authenticate = %+v, %v; want %+v, %v", id, err, tc.want, tc.err)
			}
			md := metadata.Pairs("authorization", "Bearer "+tokens[tc.token])
			_, err = adminCall(metadata.NewIncomingContext(ctx, md), nil, &grpc.UnaryServerInfo{FullMethod: "/selfhost.v1.AdminService/ListEdges"},
				func(context.Context, any) (any, error) { return nil, nil })
			if status.Code(err) != tc.code {
				t.Fatalf("admin call: %v, want %v", err, tc.code)
			}
		})
	}

	// An outage: cached results still answer, anything else is
	// Unavailable — never let through.
	k.StopAPIServer()
	if id, err := authn.Authenticate(ctx, tokens["admin by RBAC"]); err != nil || id.Kind != auth.KindAdmin {
		t.Fatalf("cached admin during the outage: %+v, %v", id, err)
	}
	fresh := "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
	if _, err := authn.Authenticate(ctx, fresh); !errors.Is(err, auth.ErrUnavailable) {
		t.Fatalf("uncached token during the outage: %v, want ErrUnavailable", err)
	}
	k.StartAPIServer(t)
	if _, err := authn.Authenticate(ctx, fresh); !errors.Is(err, auth.ErrUnknown) {
		t.Fatalf("after the outage: %v, want ErrUnknown", err)
	}

	out := logs.String()
	for name, tok := range tokens {
		if strings.Contains(out, tok) {
			t.Errorf("the log contains the token %q", name)
		}
	}
}

// grant creates a ClusterRole with rules and binds it to the
// ServiceAccount ns/sa.
func grant(ctx context.Context, t *testing.T, k *harness.Kube, name string, rules []rbacv1.PolicyRule, ns, sa string) {
	t.Helper()
	rbac := k.Client.RbacV1()
	if _, err := rbac.ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: sa}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// RBAC reads bindings from an informer: wait until the apiserver
	// applies this one, so no check below races it.
	user, groups := harness.ServiceAccountUser(ns, sa)
	for _, r := range rules {
		k.WaitAllowed(t, user, groups, &authorizationv1.ResourceAttributes{Group: r.APIGroups[0], Resource: r.Resources[0], Verb: r.Verbs[0]})
	}
}
