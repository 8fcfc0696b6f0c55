package configmapstate

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config/configfile"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/configstore"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/snapshot"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// replica is one control plane's configuration path as the server wires
// it in-cluster: config file + ConfigMap state → store, with Watch
// reloading through UpdateRuntime.
type replica struct {
	state   *StateStore
	store   *configstore.Store
	reloads chan error
}

// startReplica starts a replica whose state is in the ConfigMap that
// client reaches; it watches until ctx ends or the test cleans up.
func startReplica(t *testing.T, ctx context.Context, client kubernetes.Interface, cfgPath string) *replica {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	r := &replica{state: newStore(t, client), reloads: make(chan error, 16)}
	src := configfile.New(cfgPath, "", log, configfile.InCluster(), configfile.WithStateStore(r.state))
	st, err := src.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.store, err = configstore.New(st, src, snapshot.Builder{}, log); err != nil {
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

// writeConfig writes the replicas' config file, with the one upstream
// test, and returns its path.
func writeConfig(t *testing.T) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "controlplane.yaml")
	if err := os.WriteFile(cfg, []byte("upstreams: [{prefix: test, url: 'https://test.io'}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func (r *replica) prefixes() []string {
	var out []string
	for _, u := range r.store.Current().Upstreams {
		out = append(out, u.GetPrefix())
	}
	slices.Sort(out)
	return out
}

// addUpstream puts upstream prefix through the replica's store.
func (r *replica) addUpstream(t *testing.T, ctx context.Context, prefix string) {
	t.Helper()
	if _, err := r.store.Update(ctx, "put upstream", func(st *config.State) error {
		st.Upstreams = append(st.Upstreams, &selfhostv1.Upstream{Prefix: prefix, Url: "https://" + prefix + ".io"})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// putUpstream adds or replaces upstream u through the replica's store.
func (r *replica) putUpstream(t *testing.T, ctx context.Context, u *selfhostv1.Upstream) {
	t.Helper()
	if _, err := r.store.Update(ctx, "put upstream", func(st *config.State) error {
		st.Upstreams = slices.DeleteFunc(st.Upstreams, func(o *selfhostv1.Upstream) bool { return o.GetPrefix() == u.GetPrefix() })
		st.Upstreams = append(st.Upstreams, u)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// username is the user name of upstream prefix's credentials in the
// replica's configuration ("" when it has none).
func (r *replica) username(prefix string) string {
	for _, u := range r.store.Current().Upstreams {
		if u.GetPrefix() == prefix {
			return u.GetCredentials().GetUsername()
		}
	}
	return ""
}

func (r *replica) waitReload(t *testing.T) {
	t.Helper()
	select {
	case err := <-r.reloads:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no reload")
	}
}

func TestTwoReplicasThroughTheStore(t *testing.T) {
	t.Parallel()
	ctx, cfg, client := t.Context(), writeConfig(t), fake.NewClientset()
	a, b := startReplica(t, ctx, client, cfg), startReplica(t, ctx, client, cfg)

	a.addUpstream(t, ctx, "quay")
	b.waitReload(t)
	if got := b.prefixes(); !slices.Equal(got, []string{"quay", "test"}) {
		t.Fatalf("replica b: %v", got)
	}
	// A restarted replica starts from the ConfigMap.
	c := startReplica(t, ctx, client, cfg)
	if got := c.prefixes(); !slices.Equal(got, []string{"quay", "test"}) {
		t.Fatalf("restarted replica: %v", got)
	}
	select {
	case err := <-a.reloads:
		t.Fatalf("replica a reloaded its own write (%v)", err)
	default:
	}
}
