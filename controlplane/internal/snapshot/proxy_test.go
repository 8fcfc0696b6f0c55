package snapshot

import (
	"strings"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// clashState is baseState with Clash enabled and a pool of four nodes,
// "a" selected with fallback "b".
func clashState() *config.State {
	st := baseState()
	st.Clash = config.Clash{Enabled: true, Mode: selfhostv1.ProxyMode_PROXY_MODE_AUTO}
	nodes := map[string]*selfhostv1.ProxyNode{}
	for _, n := range []string{"a", "b", "c", "d"} {
		nodes[n] = &selfhostv1.ProxyNode{Name: n, Type: "ss", ClashJson: `{"name":"` + n + `","password":"pw-` + n + `"}`}
	}
	st.Proxy = &config.ProxyPool{Generation: 1, Nodes: nodes, Order: []string{"a", "b"}}
	st.Storage = &config.Storage{Bucket: "edge-cache", AccessKeyID: "AKID", SecretAccessKey: "s3-secret"}
	return st
}

func names(sel *selfhostv1.ProxySelection) string {
	var out []string
	for _, n := range sel.GetNodes() {
		out = append(out, n.GetName())
	}
	return strings.Join(out, ",")
}

func TestProxySelection(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		mutate   func(st *config.State)
		mode     selfhostv1.ProxyMode
		nodes    string
		selected string
		proxyOf  map[string]string // prefix → proxy as sent
	}{
		{"disabled", func(st *config.State) { st.Clash.Enabled = false }, 0, "", "", nil},
		{"auto", nil, selfhostv1.ProxyMode_PROXY_MODE_AUTO, "a,b", "a", nil},
		{"unspecified is auto", func(st *config.State) { st.Clash.Mode = 0 }, selfhostv1.ProxyMode_PROXY_MODE_AUTO, "a,b", "a", nil},
		{"not fetched yet", func(st *config.State) { st.Proxy = nil }, selfhostv1.ProxyMode_PROXY_MODE_AUTO, "", "", nil},
		{"direct ignores the order", func(st *config.State) { st.Clash.Mode = selfhostv1.ProxyMode_PROXY_MODE_DIRECT }, selfhostv1.ProxyMode_PROXY_MODE_DIRECT, "", "", nil},
		{"override node appended", func(st *config.State) { st.Upstreams[1].Proxy = "d" }, selfhostv1.ProxyMode_PROXY_MODE_AUTO, "a,b,d", "a", map[string]string{"ghcr": "d"}},
		{"override node already listed", func(st *config.State) { st.Upstreams[1].Proxy = "b" }, selfhostv1.ProxyMode_PROXY_MODE_AUTO, "a,b", "a", nil},
		{"override in direct mode", func(st *config.State) {
			st.Clash.Mode = selfhostv1.ProxyMode_PROXY_MODE_DIRECT
			st.Upstreams[0].Proxy = "c"
		}, selfhostv1.ProxyMode_PROXY_MODE_DIRECT, "c", "", map[string]string{"dockerhub": "c"}},
		{"missing override node follows the selection", func(st *config.State) { st.Upstreams[0].Proxy = "gone" }, selfhostv1.ProxyMode_PROXY_MODE_AUTO, "a,b", "a", map[string]string{"dockerhub": "auto"}},
		{"keywords pass through", func(st *config.State) {
			st.Upstreams[0].Proxy = "direct"
			st.Upstreams[1].Proxy = "auto"
		}, selfhostv1.ProxyMode_PROXY_MODE_AUTO, "a,b", "a", map[string]string{"dockerhub": "direct", "ghcr": "auto"}},
		{"keywords in any case", func(st *config.State) {
			st.Upstreams[0].Proxy = "Direct"
			st.Upstreams[1].Proxy = "AUTO"
		}, selfhostv1.ProxyMode_PROXY_MODE_AUTO, "a,b", "a", map[string]string{"dockerhub": "Direct", "ghcr": "AUTO"}},
		{"order names a node not in the pool", func(st *config.State) {
			st.Proxy = &config.ProxyPool{Nodes: st.Proxy.Nodes, Order: []string{"zz", "c"}}
		}, selfhostv1.ProxyMode_PROXY_MODE_AUTO, "c", "c", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := clashState()
			if tc.mutate != nil {
				tc.mutate(st)
			}
			set := mustBuild(t, st)
			a, _ := set.Namespace("team-a")
			b, _ := set.Namespace("team-b")
			sel := a.Config.GetProxy()
			if sel.GetMode() != tc.mode || names(sel) != tc.nodes {
				t.Fatalf("selection = %v %q, want %v %q", sel.GetMode(), names(sel), tc.mode, tc.nodes)
			}
			if b.Config.GetProxy() != sel {
				t.Error("namespaces do not share the selection")
			}
			if got := set.Proxy.GetSelected(); got != tc.selected {
				t.Errorf("selected %q, want %q", got, tc.selected)
			}
			for _, u := range a.Config.GetUpstreams() {
				if want, ok := tc.proxyOf[u.GetPrefix()]; ok && u.GetProxy() != want {
					t.Errorf("upstream %s sent with proxy %q, want %q", u.GetPrefix(), u.GetProxy(), want)
				}
			}
		})
	}
}

func TestProxyOverrideKeepsStoredUpstream(t *testing.T) {
	t.Parallel()
	st := clashState()
	st.Upstreams[0].Proxy = "gone"
	set := mustBuild(t, st)
	for _, u := range set.Upstreams {
		if u.GetPrefix() == "dockerhub" && u.GetProxy() != "gone" {
			t.Fatalf("stored upstream changed: %v", u)
		}
	}
	if len(set.Proxy.Missing) != 1 || set.Proxy.Missing[0] != "gone" {
		t.Fatalf("missing = %v", set.Proxy.Missing)
	}
}

func TestProxyVersion(t *testing.T) {
	t.Parallel()
	base := mustBuild(t, clashState())
	same := clashState()
	same.Proxy.Generation = 7 // a new pool with the same content
	if v := mustBuild(t, same).Version; v != base.Version {
		t.Errorf("same selection, new generation: version %s → %s", base.Version, v)
	}
	unused := clashState()
	unused.Proxy.Nodes["e"] = &selfhostv1.ProxyNode{Name: "e"}
	if v := mustBuild(t, unused).Version; v != base.Version {
		t.Error("a node nobody uses changed the version")
	}
	reordered := clashState()
	reordered.Proxy.Order = []string{"b", "a"}
	next := mustBuild(t, reordered)
	if next.Version == base.Version || len(ChangedNamespaces(base, next)) != 2 {
		t.Error("a new order did not change every namespace")
	}
}
