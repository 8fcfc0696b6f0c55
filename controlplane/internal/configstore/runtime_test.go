package configstore

import (
	"errors"
	"strings"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/configspec"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

func pool(gen uint64, order ...string) *config.ProxyPool {
	nodes := map[string]*selfhostv1.ProxyNode{}
	for _, n := range []string{"a", "b", "c"} {
		nodes[n] = &selfhostv1.ProxyNode{Name: n, Type: "socks5", ClashJson: `{"name":"` + n + `"}`}
	}
	return &config.ProxyPool{Generation: gen, Nodes: nodes, Order: order}
}

func enableClash(t *testing.T, s *Store) {
	t.Helper()
	if _, err := s.Update(t.Context(), "enable clash", func(st *config.State) error {
		st.Clash.Enabled = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestUpdateRuntime: runtime changes are built and announced when a
// snapshot changes, never persisted, and adopted even when no snapshot
// changes (so the next change starts from them).
func TestUpdateRuntime(t *testing.T) {
	t.Parallel()
	s, src, rec := newStore(t)
	enableClash(t, s)
	saves := src.saves
	announced := len(rec.sets)

	if set, err := s.UpdateRuntime(t.Context(), "nothing", func(*config.State) bool { return false }); err != nil || set != s.Current() {
		t.Fatalf("no-op: %v", err)
	}
	set, err := s.UpdateRuntime(t.Context(), "select", func(st *config.State) bool { st.Proxy = pool(1, "a", "b"); return true })
	if err != nil || set.Proxy.Selected != "a" || len(rec.sets) != announced+1 {
		t.Fatalf("select: %v, %+v, %d announcements", err, set.Proxy, len(rec.sets)-announced)
	}
	// A new pool generation with the same order: same snapshots, adopted
	// silently.
	if _, err := s.UpdateRuntime(t.Context(), "same order", func(st *config.State) bool { st.Proxy = pool(2, "a", "b"); return true }); err != nil {
		t.Fatal(err)
	}
	if len(rec.sets) != announced+1 {
		t.Fatal("an invisible change was announced")
	}
	var gen uint64
	_, _ = s.UpdateRuntime(t.Context(), "look", func(st *config.State) bool { gen = st.Proxy.Generation; return false })
	if gen != 2 {
		t.Fatalf("generation %d: the invisible change was not adopted", gen)
	}
	if src.saves != saves {
		t.Fatalf("runtime changes persisted %d times", src.saves-saves)
	}
}

func TestPutUpstreamProxy(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
	put := func(proxy string) error {
		_, err := s.PutUpstream(t.Context(), &selfhostv1.Upstream{Prefix: "gcr", Url: "https://gcr.io", Proxy: proxy})
		return err
	}
	for _, p := range []string{"", "auto", "direct", "Direct", "AUTO"} {
		if err := put(p); err != nil {
			t.Errorf("proxy %q: %v", p, err)
		}
	}
	if err := put("a"); err == nil || !strings.Contains(err.Error(), "Clash is not enabled") {
		t.Fatalf("node without Clash: %v", err)
	}
	enableClash(t, s)
	if err := put("a"); err == nil || !strings.Contains(err.Error(), "not been fetched yet") {
		t.Fatalf("node before the first fetch: %v", err)
	}
	if _, err := s.UpdateRuntime(t.Context(), "pool", func(st *config.State) bool { st.Proxy = pool(1, "b"); return true }); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"zz": `upstream.proxy: no node "zz"`, "a\x00": "upstream.proxy: contains control characters"} {
		err := put(p)
		if !errors.Is(err, configspec.ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("proxy %q: %v, want ErrInvalid naming %q", p, err, want)
		}
	}
	set, err := s.PutUpstream(t.Context(), &selfhostv1.Upstream{Prefix: "gcr", Url: "https://gcr.io", Proxy: "a"})
	if err != nil {
		t.Fatal(err)
	}
	ns, _ := set.Namespace("team-b")
	if got := ns.Config.GetProxy().GetNodes(); len(got) != 2 || got[0].GetName() != "b" || got[1].GetName() != "a" {
		t.Fatalf("nodes %v: the selection, then gcr's node", got)
	}
}
