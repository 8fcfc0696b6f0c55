package configmapstate

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// waitFor waits for a reload after which the replica has want; the
// context's deadline only keeps a broken watch from hanging the test.
func (r *replica) waitFor(t *testing.T, ctx context.Context, want ...string) {
	t.Helper()
	for !slices.Equal(r.prefixes(), want) {
		select {
		case err := <-r.reloads:
			if err != nil {
				t.Fatal(err)
			}
		case <-ctx.Done():
			t.Fatalf("replica has %v, want %v", r.prefixes(), want)
		}
	}
}

// TestReplicasShareTheConfigMap runs two replicas on one real apiserver,
// each as the control plane's ServiceAccount with only the Role the chart
// grants: what one changes through the store, the other applies.
func TestReplicasShareTheConfigMap(t *testing.T) {
	t.Parallel()
	k := harness.StartKube(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	token := k.ServiceAccountToken(t, ns, "controlplane", nil, 15*time.Minute)
	grantStateRole(t, ctx, k)
	cfg := writeConfig(t)
	a := startReplica(t, ctx, k.ClientFor(t, token), cfg)
	b := startReplica(t, ctx, k.ClientFor(t, token), cfg)
	if _, err := a.state.Latest(); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("before any write: %v", err)
	}

	a.addUpstream(t, ctx, "quay") // creates the ConfigMap
	b.waitFor(t, ctx, "quay", "test")
	b.addUpstream(t, ctx, "ghcr") // updates it
	a.waitFor(t, ctx, "ghcr", "quay", "test")

	// b's cached resourceVersion is stale after a writes: a real Conflict,
	// re-read and retried; the last writer wins and both converge on it.
	a.addUpstream(t, ctx, "gcr")
	b.addUpstream(t, ctx, "k8s")
	cm, err := k.Client.CoreV1().ConfigMaps(ns).Get(ctx, DefaultName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	latest, err := b.state.Latest()
	if err != nil || cm.Data[DefaultKey] != string(latest) {
		t.Fatalf("the ConfigMap holds %q, b last wrote %q (%v)", cm.Data[DefaultKey], latest, err)
	}
	want := b.prefixes()
	a.waitFor(t, ctx, want...)

	// A restarted replica starts from the ConfigMap.
	c := startReplica(t, ctx, k.ClientFor(t, token), cfg)
	if got := c.prefixes(); !slices.Equal(got, want) {
		t.Fatalf("restarted replica: %v, want %v", got, want)
	}

	// Without a watch to refresh it, a StateStore's resourceVersion is surely
	// stale after another one wrote: the apiserver answers Conflict, and
	// Write re-reads and wins.
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	x, _ := New(k.ClientFor(t, token), Options{Namespace: ns})
	y, _ := New(k.ClientFor(t, token), Options{Namespace: ns, Log: log})
	for _, s := range []*StateStore{x, y} {
		if _, err := s.Read(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.Write(ctx, []byte("from x")); err != nil {
		t.Fatal(err)
	}
	if err := y.Write(ctx, []byte("from y")); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "retrying over it") || !strings.Contains(logs.String(), "the object has been modified") {
		t.Errorf("no Conflict was retried:\n%s", logs.String())
	}
	if data, err := x.Read(ctx); err != nil || string(data) != "from y" {
		t.Fatalf("after both writes: %q, %v", data, err)
	}
}

// grantStateRole is the Role the chart gives the control plane in its
// release namespace for the state ConfigMap and credentials Secret
// (PolicyRules): everything on those names but create, which RBAC cannot
// restrict by name.
func grantStateRole(t *testing.T, ctx context.Context, k *harness.Kube) {
	t.Helper()
	rbac := k.Client.RbacV1()
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "selfhost-controlplane-state", Namespace: ns},
		Rules:      PolicyRules(),
	}
	if _, err := rbac.Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := rbac.RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name, Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "controlplane"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// RBAC reads bindings from an informer: wait until this one applies.
	user, groups := harness.ServiceAccountUser(ns, "controlplane")
	for _, verb := range []string{"create", "update"} {
		k.WaitAllowed(t, user, groups, &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Resource: "configmaps", Name: DefaultName})
		k.WaitAllowed(t, user, groups, &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Resource: "secrets", Name: DefaultSecretName})
	}
}

// TestCredentialsLiveInTheSecret: on a real apiserver, as the control
// plane's ServiceAccount with PolicyRules only, upstream credentials put
// through the store go into the Secret and never into the ConfigMap;
// credentials a ConfigMap from before the move holds inline are used, and
// moved by the first write; another replica sees them all.
func TestCredentialsLiveInTheSecret(t *testing.T) {
	t.Parallel()
	k := harness.StartKube(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	token := k.ServiceAccountToken(t, ns, "controlplane", nil, 15*time.Minute)
	grantStateRole(t, ctx, k)

	// What an older control plane left: credentials inline.
	old := `{"format": 1, "upstreams": [{"prefix": "quay", "url": "https://quay.io", "credentials": {"username": "quay-user", "password": "quay-old-password"}}]}`
	if _, err := k.Client.CoreV1().ConfigMaps(ns).Create(ctx, stateCM(map[string]string{DefaultKey: old}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t)
	a := startReplica(t, ctx, k.ClientFor(t, token), cfg)
	b := startReplica(t, ctx, k.ClientFor(t, token), cfg)
	if got := a.username("quay"); got != "quay-user" {
		t.Fatalf("inline credentials before the move: %q", got)
	}

	a.putUpstream(t, ctx, &selfhostv1.Upstream{Prefix: "ghcr", Url: "https://ghcr.io",
		Credentials: &selfhostv1.Credentials{Username: "ghcr-user", Password: "ghcr-password"}})
	// The state's upstreams replace the config file's.
	b.waitFor(t, ctx, "ghcr", "quay")
	for _, r := range []*replica{a, b} {
		if r.username("quay") != "quay-user" || r.username("ghcr") != "ghcr-user" {
			t.Fatalf("credentials after the write: quay %q, ghcr %q", r.username("quay"), r.username("ghcr"))
		}
	}
	cm, err := k.Client.CoreV1().ConfigMaps(ns).Get(ctx, DefaultName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"quay-old-password", "ghcr-password", "credentials"} {
		if strings.Contains(cm.Data[DefaultKey], s) {
			t.Errorf("the ConfigMap still holds %q:\n%s", s, cm.Data[DefaultKey])
		}
	}
	sec, err := k.Client.CoreV1().Secrets(ns).Get(ctx, DefaultSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	body := string(sec.Data[DefaultSecretKey])
	if !strings.Contains(body, "quay-old-password") || !strings.Contains(body, "ghcr-password") || sec.Labels["app.kubernetes.io/managed-by"] == "" {
		t.Errorf("Secret %v holds %s", sec.Labels, body)
	}

	// Credentials changed and removed through b reach a; a restarted
	// replica reads both objects.
	b.putUpstream(t, ctx, &selfhostv1.Upstream{Prefix: "quay", Url: "https://quay.io"})
	for a.username("quay") != "" {
		a.waitReload(t)
	}
	c := startReplica(t, ctx, k.ClientFor(t, token), cfg)
	if c.username("quay") != "" || c.username("ghcr") != "ghcr-user" {
		t.Fatalf("restarted replica: quay %q, ghcr %q", c.username("quay"), c.username("ghcr"))
	}
}
