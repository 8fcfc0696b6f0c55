package configmapstate_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/configfile"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/configmapstate"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/snapshot"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/store"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

const releaseNS = "selfhost-system"

// kubeReplica is one control plane replica's configuration path against
// a real apiserver, as its own ServiceAccount client with only the Role
// below.
type kubeReplica struct {
	state   *configmapstate.Store
	store   *store.Store
	reloads chan error
}

func startKubeReplica(t *testing.T, ctx context.Context, client kubernetes.Interface, cfgPath string) *kubeReplica {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	cm, err := configmapstate.New(client, configmapstate.Options{Namespace: releaseNS, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	src := configfile.New(cfgPath, "", log, configfile.InCluster(), configfile.WithStateStore(cm))
	st, err := src.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := &kubeReplica{state: cm, reloads: make(chan error, 16)}
	if r.store, err = store.New(st, src, snapshot.Builder{}, log); err != nil {
		t.Fatal(err)
	}
	watchCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- src.Watch(watchCtx, func(ctx context.Context, apply func(*config.State) bool) {
			_, err := r.store.UpdateRuntime(ctx, "runtime state from another replica", apply)
			r.reloads <- err
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return r
}

func (r *kubeReplica) prefixes() []string {
	var out []string
	for _, u := range r.store.Current().Upstreams {
		out = append(out, u.GetPrefix())
	}
	slices.Sort(out)
	return out
}

// waitFor waits for a reload after which the replica has want; the
// context's deadline only keeps a broken watch from hanging the test.
func (r *kubeReplica) waitFor(t *testing.T, ctx context.Context, want ...string) {
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

func addUpstream(t *testing.T, ctx context.Context, r *kubeReplica, prefix string) {
	t.Helper()
	if _, err := r.store.Update(ctx, "put upstream", func(st *config.State) error {
		st.Upstreams = append(st.Upstreams, &selfhostv1.Upstream{Prefix: prefix, Url: "https://" + prefix + ".io"})
		return nil
	}); err != nil {
		t.Fatal(err)
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

	token := k.ServiceAccountToken(t, releaseNS, "controlplane", nil, 15*time.Minute)
	grantStateRole(t, ctx, k.Client)
	cfg := filepath.Join(t.TempDir(), "controlplane.yaml")
	if err := os.WriteFile(cfg, []byte("upstreams: [{prefix: test, url: 'https://test.io'}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startKubeReplica(t, ctx, k.ClientFor(t, token), cfg)
	b := startKubeReplica(t, ctx, k.ClientFor(t, token), cfg)
	if _, err := a.state.Latest(); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("before any write: %v", err)
	}

	addUpstream(t, ctx, a, "quay") // creates the ConfigMap
	b.waitFor(t, ctx, "quay", "test")
	addUpstream(t, ctx, b, "ghcr") // updates it
	a.waitFor(t, ctx, "ghcr", "quay", "test")

	// b's cached resourceVersion is stale after a writes: a real Conflict,
	// re-read and retried; the last writer wins and both converge on it.
	addUpstream(t, ctx, a, "gcr")
	addUpstream(t, ctx, b, "k8s")
	cm, err := k.Client.CoreV1().ConfigMaps(releaseNS).Get(ctx, configmapstate.DefaultName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	latest, err := b.state.Latest()
	if err != nil || cm.Data[configmapstate.DefaultKey] != string(latest) {
		t.Fatalf("the ConfigMap holds %q, b last wrote %q (%v)", cm.Data[configmapstate.DefaultKey], latest, err)
	}
	want := b.prefixes()
	a.waitFor(t, ctx, want...)

	// A restarted replica starts from the ConfigMap.
	c := startKubeReplica(t, ctx, k.ClientFor(t, token), cfg)
	if got := c.prefixes(); !slices.Equal(got, want) {
		t.Fatalf("restarted replica: %v, want %v", got, want)
	}

	// Without a watch to refresh it, a Store's resourceVersion is surely
	// stale after another one wrote: the apiserver answers Conflict, and
	// Write re-reads and wins.
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	x, _ := configmapstate.New(k.ClientFor(t, token), configmapstate.Options{Namespace: releaseNS})
	y, _ := configmapstate.New(k.ClientFor(t, token), configmapstate.Options{Namespace: releaseNS, Log: log})
	for _, s := range []*configmapstate.Store{x, y} {
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
func grantStateRole(t *testing.T, ctx context.Context, client kubernetes.Interface) {
	t.Helper()
	rbac := client.RbacV1()
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "selfhost-controlplane-state", Namespace: releaseNS},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{configmapstate.DefaultName}, Verbs: []string{"get", "list", "watch", "update"}},
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create"}},
		},
	}
	if _, err := rbac.Roles(releaseNS).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := rbac.RoleBindings(releaseNS).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name, Namespace: releaseNS},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: releaseNS, Name: "controlplane"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// RBAC reads bindings from an informer: wait until this one applies.
	for _, verb := range []string{"create", "update"} {
		for {
			sar, err := client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
				Spec: authorizationv1.SubjectAccessReviewSpec{
					User:   "system:serviceaccount:" + releaseNS + ":controlplane",
					Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + releaseNS, "system:authenticated"},
					ResourceAttributes: &authorizationv1.ResourceAttributes{
						Namespace: releaseNS, Verb: verb, Resource: "configmaps", Name: configmapstate.DefaultName,
					},
				},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if sar.Status.Allowed {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatal("the Role binding never took effect")
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}
