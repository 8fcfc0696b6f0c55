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

	// Without a watch to refresh it, a Store's resourceVersion is surely
	// stale after another one wrote: the apiserver answers Conflict, and
	// Write re-reads and wins.
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	x, _ := New(k.ClientFor(t, token), Options{Namespace: ns})
	y, _ := New(k.ClientFor(t, token), Options{Namespace: ns, Log: log})
	for _, s := range []*Store{x, y} {
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
// release namespace for the state ConfigMap: everything on that one name
// but create, which RBAC cannot restrict by name.
func grantStateRole(t *testing.T, ctx context.Context, k *harness.Kube) {
	t.Helper()
	rbac := k.Client.RbacV1()
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "selfhost-controlplane-state", Namespace: ns},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{DefaultName}, Verbs: []string{"get", "list", "watch", "update"}},
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create"}},
		},
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
	}
}
