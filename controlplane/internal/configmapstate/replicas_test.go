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
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/configfile"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/snapshot"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/store"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// replica is one control plane's configuration path as the server wires
// it in-cluster: config file + ConfigMap state → store, with Watch
// reloading through UpdateRuntime.
type replica struct {
	store   *store.Store
	reloads chan error
}

func startReplica(t *testing.T, client kubernetes.Interface, cfgPath string) *replica {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	src := configfile.New(cfgPath, "", log, configfile.InCluster(), configfile.WithStateStore(newStore(t, client)))
	st, err := src.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{reloads: make(chan error, 16)}
	if r.store, err = store.New(st, src, snapshot.Builder{}, log); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- src.Watch(ctx, func(ctx context.Context, apply func(*config.State) bool) {
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

func (r *replica) prefixes() []string {
	var out []string
	for _, u := range r.store.Current().Upstreams {
		out = append(out, u.GetPrefix())
	}
	slices.Sort(out)
	return out
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
	cfg := filepath.Join(t.TempDir(), "controlplane.yaml")
	if err := os.WriteFile(cfg, []byte("upstreams: [{prefix: test, url: 'https://test.io'}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset()
	a, b := startReplica(t, client, cfg), startReplica(t, client, cfg)

	if _, err := a.store.Update(t.Context(), "put upstream", func(st *config.State) error {
		st.Upstreams = append(st.Upstreams, &selfhostv1.Upstream{Prefix: "quay", Url: "https://quay.io"})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	b.waitReload(t)
	if got := b.prefixes(); !slices.Equal(got, []string{"quay", "test"}) {
		t.Fatalf("replica b: %v", got)
	}
	// A restarted replica starts from the ConfigMap.
	c := startReplica(t, client, cfg)
	if got := c.prefixes(); !slices.Equal(got, []string{"quay", "test"}) {
		t.Fatalf("restarted replica: %v", got)
	}
	select {
	case err := <-a.reloads:
		t.Fatalf("replica a reloaded its own write (%v)", err)
	default:
	}
}
