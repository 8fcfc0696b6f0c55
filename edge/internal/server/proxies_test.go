package server

import (
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/clashnode"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/proxydial"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

func socksNode(name string, port int) *selfhostv1.ProxyNode {
	b, _ := json.Marshal(map[string]any{"type": "socks5", "server": "127.0.0.1", "port": port})
	return &selfhostv1.ProxyNode{Name: name, Type: "socks5", ClashJson: string(b)}
}

func TestNodePool(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	bad := &selfhostv1.ProxyNode{Name: "bad", Type: "ss", ClashJson: `{"type":"ss","server":"h","port":1,"cipher":"rot13","password":"hunter2-secret"}`}
	sel := func(mode selfhostv1.ProxyMode, nodes ...*selfhostv1.ProxyNode) *selfhostv1.ProxySelection {
		return &selfhostv1.ProxySelection{Mode: mode, Nodes: nodes}
	}
	auto, pinned := selfhostv1.ProxyMode_PROXY_MODE_AUTO, selfhostv1.ProxyMode_PROXY_MODE_PINNED
	tests := []struct {
		name     string
		sel      *selfhostv1.ProxySelection
		override string
		want     string // node names joined by ",", "" direct
		wantErr  string
	}{
		{"unset selection is direct", nil, "", "", ""},
		{"unspecified mode is direct", sel(0, socksNode("a", 1)), "", "", ""},
		{"direct mode", sel(selfhostv1.ProxyMode_PROXY_MODE_DIRECT, socksNode("a", 1)), "auto", "", ""},
		{"auto keeps the order", sel(auto, socksNode("b", 2), socksNode("a", 1)), "", "b,a", ""},
		{"pinned", sel(pinned, socksNode("a", 1)), "AUTO", "a", ""},
		{"override direct", sel(auto, socksNode("a", 1)), "direct", "", ""},
		{"override names a node, even in direct mode", sel(selfhostv1.ProxyMode_PROXY_MODE_DIRECT, socksNode("a", 1), socksNode("b", 2)), "b", "b", ""},
		{"override names an unknown node", sel(auto, socksNode("a", 1)), "zz", "", `upstreams[0].proxy: node "zz" is not among proxy.nodes`},
		{"a bad node is skipped", sel(auto, bad, socksNode("a", 1)), "", "a", ""},
		{"override names the bad node", sel(auto, bad, socksNode("a", 1)), "bad", "", `node "bad" is not usable`},
		{"auto with no usable node dials directly", sel(auto, bad), "", "", ""},
		{"duplicate names", sel(auto, socksNode("a", 1), socksNode("a", 2)), "", "", `proxy.nodes[1].name: "a" is used twice`},
		{"type mismatch", sel(auto, &selfhostv1.ProxyNode{Name: "m", Type: "ss", ClashJson: `{"type":"socks5","server":"h","port":1}`}, socksNode("a", 1)), "m", "", "differs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pool, err := proxydial.ParseSelection(tt.sel, log)
			var names []string
			if err == nil {
				var nodes []*clashnode.Node
				nodes, err = pool.NodesFor("upstreams[0]", tt.override)
				names = nodeNames(nodes)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "hunter2-secret") {
					t.Fatalf("err = %v holds a node password", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(names, ","); got != tt.want {
				t.Fatalf("nodes = %q, want %q", got, tt.want)
			}
		})
	}
}

// reports is a failureReporter that keeps what it gets.
type reports struct {
	mu  sync.Mutex
	got []*selfhostv1.ProxyFailure
}

func (r *reports) ReportProxyFailure(f *selfhostv1.ProxyFailure) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, f)
	return true
}

func (r *reports) all() []*selfhostv1.ProxyFailure {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*selfhostv1.ProxyFailure(nil), r.got...)
}

// closedPort is a loopback port nothing listens on: a dial fails at once.
func closedPort(t *testing.T) int { return testkit.FreePort(t) }

// TestApplyProxySelection: a snapshot's selection is dialled in order with
// failover, counted in the metrics, reported to the control plane; a
// client is reused only while its upstream and its node list are
// unchanged.
func TestApplyProxySelection(t *testing.T) {
	t.Parallel()
	p := newParts(t)
	rep := &reports{}
	p.applier.proxies.obs.setReporter(rep)
	live := harness.StartMicrosocks(t, harness.ProxyOptions{Name: "live"})
	cfg := snapshot("v1", newUpstream(t, "via-proxy"), nil)
	cfg.Proxy = &selfhostv1.ProxySelection{Mode: selfhostv1.ProxyMode_PROXY_MODE_AUTO,
		Nodes: []*selfhostv1.ProxyNode{socksNode("dead", closedPort(t)), socksNode("live", live.Port)}}
	cfg.Upstreams[1].Proxy = "direct"
	if err := p.applier.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	edge := httptest.NewServer(p.handler)
	t.Cleanup(edge.Close)
	if code, body, _ := get(t, edge.URL+"/v2/test/org/app/manifests/via-proxy", ""); code != 200 || !strings.Contains(body, "via-proxy") {
		t.Fatalf("pull through the selection: %d %s", code, body)
	}
	if v := testutil.ToFloat64(p.metrics.ProxyDials.WithLabelValues("dead", "error")); v != 1 {
		t.Errorf("dials dead/error = %v, want 1", v)
	}
	if v := testutil.ToFloat64(p.metrics.ProxyDials.WithLabelValues("live", "ok")); v < 1 {
		t.Errorf("dials live/ok = %v, want >= 1", v)
	}
	if v := testutil.ToFloat64(p.metrics.ProxyFailovers); v != 1 {
		t.Errorf("failovers = %v, want 1", v)
	}
	if got := rep.all(); len(got) != 1 || got[0].GetNode() != "dead" || got[0].GetPrefix() != "test" || got[0].GetError() == "" {
		t.Errorf("reports = %v, want one for dead/test", got)
	}

	test1, _ := p.set.cur.Load().Fetcher("test")
	ghcr1, _ := p.set.cur.Load().Fetcher("ghcr")
	cfg.Version = "v2"
	if err := p.applier.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if test2, _ := p.set.cur.Load().Fetcher("test"); test2 != test1 {
		t.Error("same upstream, same nodes: the client was not reused")
	}
	cfg.Version = "v3"
	cfg.Proxy.Nodes = []*selfhostv1.ProxyNode{cfg.Proxy.Nodes[1], cfg.Proxy.Nodes[0]}
	if err := p.applier.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if test3, _ := p.set.cur.Load().Fetcher("test"); test3 == test1 {
		t.Error("new node order: the client was reused")
	}
	if ghcr3, _ := p.set.cur.Load().Fetcher("ghcr"); ghcr3 != ghcr1 {
		t.Error("a direct upstream got a new client when only the selection changed")
	}
	cfg.Version = "v4"
	cfg.Upstreams[0].Proxy = "nowhere"
	if err := p.applier.Apply(cfg); err == nil || !strings.Contains(err.Error(), "upstreams[0].proxy") {
		t.Fatalf("override to an unknown node: err = %v, want a NACK naming upstreams[0].proxy", err)
	}
	if code, _, _ := get(t, edge.URL+"/v2/test/org/app/manifests/via-proxy", ""); code != 200 {
		t.Fatalf("after the NACK the last good snapshot must serve: %d", code)
	}
}
