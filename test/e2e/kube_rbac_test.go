package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// The release namespace's state objects (controlplane/internal/config/configmapstate).
const (
	stateConfigMap    = "selfhost-controlplane-state"
	credentialsSecret = "selfhost-controlplane-credentials"
)

// TestKubernetesRBAC applies deploy/rbac.yaml to a real kube-apiserver
// and asks it what the control plane's ServiceAccount may do with the
// Secrets of a tenant namespace: only the objects it names, the tenant's
// upstream credentials read-only, and nothing of any other Secret — by
// SubjectAccessReview and by requests made with the ServiceAccount's token
// (a list or watch by metadata.name is what the informers send). Then
// `controlplane cleanup` (the chart's uninstall hook) runs under the same
// rules: it finds what it deletes by name, and leaves the tenant's own
// Secrets.
func TestKubernetesRBAC(t *testing.T) {
	t.Parallel()
	k := harness.StartKube(t)
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	k.ApplyFile(t, filepath.Join(root, "deploy", "rbac.yaml"))
	const tenant = "team-a"
	sa := k.ClientFor(t, k.ServiceAccountToken(t, releaseNS, "selfhost-controlplane", nil, time.Hour))
	user, groups := harness.ServiceAccountUser(releaseNS, "selfhost-controlplane")
	ctx := context.Background()
	if _, err := k.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tenant}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"app-secret", kubecontract.UpstreamCredentialsSecretName} {
		if _, err := k.Client.CoreV1().Secrets(tenant).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name},
			StringData: map[string]string{"k": "v"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// RBAC reads bindings from an informer: wait until they apply.
	k.WaitAllowed(t, user, groups, &authorizationv1.ResourceAttributes{Namespace: tenant, Verb: "get", Resource: "secrets", Name: kubecontract.PullSecretName})

	tests := []struct {
		ns, verb, resource, name string
		allowed                  bool
	}{
		{tenant, "get", "secrets", "app-secret", false},
		{tenant, "list", "secrets", "", false},
		{"", "list", "secrets", "", false},
		{tenant, "watch", "secrets", "", false},
		{tenant, "update", "secrets", "app-secret", false},
		{tenant, "delete", "secrets", "app-secret", false},
		{tenant, "get", "secrets", kubecontract.PullSecretName, true},
		{"", "watch", "secrets", kubecontract.PullSecretName, true},
		{tenant, "update", "secrets", kubecontract.PullSecretName, true},
		{tenant, "get", "secrets", kubecontract.UpstreamCredentialsSecretName, true},
		{"", "list", "secrets", kubecontract.UpstreamCredentialsSecretName, true},
		{tenant, "update", "secrets", kubecontract.UpstreamCredentialsSecretName, false},
		{tenant, "delete", "secrets", kubecontract.UpstreamCredentialsSecretName, false},
		// create cannot be narrowed by name (deploy/rbac.yaml says so).
		{tenant, "create", "secrets", "", true},
		{tenant, "get", "configmaps", "kube-root-ca.crt", false},
		{tenant, "list", "configmaps", "", false},
		{tenant, "get", "serviceaccounts", "default", false},
		{tenant, "update", "deployments", "someone-elses", false},
		{tenant, "update", "deployments", kubecontract.EdgeName, true},
		// The release namespace's own Secrets, by name only.
		{releaseNS, "get", "secrets", "selfhost-controlplane-credentials", true},
		{releaseNS, "get", "secrets", "k8s-selfhost-repo-webhook-tls", true},
		{releaseNS, "get", "secrets", "selfhost-controlplane-s3", false},
		{releaseNS, "list", "secrets", "", false},
	}
	for _, tc := range tests {
		attrs := &authorizationv1.ResourceAttributes{Namespace: tc.ns, Verb: tc.verb, Resource: tc.resource, Name: tc.name}
		if tc.resource == "deployments" {
			attrs.Group = "apps"
		}
		sar, err := k.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{User: user, Groups: groups, ResourceAttributes: attrs}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if sar.Status.Allowed != tc.allowed {
			t.Errorf("%s %s %q in %q: allowed %v, want %v", tc.verb, tc.resource, tc.name, tc.ns, sar.Status.Allowed, tc.allowed)
		}
	}

	// The same with the ServiceAccount's token.
	secrets := sa.CoreV1().Secrets(tenant)
	if _, err := secrets.Get(ctx, "app-secret", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("get a tenant's Secret: %v, want Forbidden", err)
	}
	if _, err := secrets.List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("list a tenant's Secrets: %v, want Forbidden", err)
	}
	byName := metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", kubecontract.UpstreamCredentialsSecretName).String()}
	l, err := sa.CoreV1().Secrets("").List(ctx, byName)
	if err != nil || len(l.Items) != 1 {
		t.Errorf("list the upstream credentials Secrets by name: %v (%d items)", err, len(l.Items))
	}
	w, err := sa.CoreV1().Secrets("").Watch(ctx, byName)
	if err != nil {
		t.Errorf("watch the upstream credentials Secrets by name: %v", err)
	} else {
		w.Stop()
	}
	cred, err := secrets.Get(ctx, kubecontract.UpstreamCredentialsSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get the tenant's upstream credentials: %v", err)
	}
	cred.StringData = map[string]string{"k": "changed"}
	if _, err := secrets.Update(ctx, cred, metav1.UpdateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("update the tenant's upstream credentials: %v, want Forbidden", err)
	}

	// `controlplane cleanup` finds and deletes what it must under this
	// RBAC (every list by name), and leaves the tenant's Secrets.
	managed := map[string]string{kubecontract.ManagedByLabel: kubecontract.ManagedByValue}
	if _, err := k.Client.CoreV1().ConfigMaps(releaseNS).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
		Name: stateConfigMap, Labels: managed}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Client.CoreV1().Secrets(releaseNS).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
		Name: credentialsSecret, Labels: managed}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	edgeLabels := map[string]string{kubecontract.ManagedByLabel: kubecontract.ManagedByValue, kubecontract.ComponentLabel: kubecontract.EdgeComponent}
	if _, err := k.Client.CoreV1().Secrets(tenant).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
		Name: kubecontract.PullSecretName, Labels: edgeLabels}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	token := k.ServiceAccountToken(t, releaseNS, "selfhost-controlplane", nil, time.Hour)
	cmd := exec.Command(harness.ControlPlaneBinary(t), "cleanup", "--namespace", releaseNS, "--timeout", "60s",
		"--kubeconfig", k.KubeconfigFor(t, "controlplane", token))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("controlplane cleanup under deploy/rbac.yaml: %v\n%s", err, out)
	}
	for _, want := range []string{releaseNS + "/" + stateConfigMap, releaseNS + "/" + credentialsSecret, tenant + "/" + kubecontract.PullSecretName} {
		if !strings.Contains(string(out), want) {
			t.Errorf("cleanup did not delete %s:\n%s", want, out)
		}
	}
	if l, err := k.Client.CoreV1().Secrets(tenant).List(ctx, metav1.ListOptions{}); err != nil || len(l.Items) != 2 {
		t.Errorf("the tenant's own Secrets after cleanup: %v, %v", l, err)
	}
}
