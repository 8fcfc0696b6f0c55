package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// TestProxyUpstreamOnlyThroughProxy: with no proxy the edge cannot reach
// the registry at all; with --proxy it pulls through each node type, given
// as a share link or as a Clash node in JSON or YAML.
func TestProxyUpstreamOnlyThroughProxy(t *testing.T) {
	t.Parallel()
	n := newProxyNet(t)
	im := harness.PushImage(t, n.reg.Addr, "proxied/app", "v1", types.OCIManifestSchema1, 2, 256<<10)

	direct := n.startEdge(t)
	wantUnreachable(t, direct, im, "an edge without a proxy")

	type nodeCase struct {
		name  string
		start func(testing.TB, harness.ProxyOptions) *harness.ProxyServer
		flag  func(*harness.ProxyServer) string
		env   bool // EDGE_PROXY instead of --proxy
	}
	link := func(ps *harness.ProxyServer) string { return ps.Link }
	jsonNode := func(ps *harness.ProxyServer) string { return ps.NodeJSON() }
	yamlNode := func(ps *harness.ProxyServer) string {
		var b strings.Builder
		for k, v := range ps.Node {
			fmt.Fprintf(&b, "%s: %v\n", k, v)
		}
		return b.String()
	}
	for _, c := range []nodeCase{
		{"ss-aes-256-gcm-env", harness.StartShadowsocks, link, true},
		{"ss-chacha20-json", func(t testing.TB, o harness.ProxyOptions) *harness.ProxyServer {
			o.Cipher = "chacha20-ietf-poly1305"
			return harness.StartShadowsocks(t, o)
		}, jsonNode, false},
		{"socks5-link", harness.StartMicrosocks, link, false},
		{"http-yaml", harness.StartTinyproxy, yamlNode, false},
		{"trojan-link", harness.StartTrojan, link, false},
		{"vmess-link", harness.StartV2RayVmess, link, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ps := c.start(t, n.proxyOptions(c.name))
			var edge *harness.Edge
			if c.env {
				edge = n.startEdgeWith(t, harness.EdgeOptions{Env: []string{"EDGE_PROXY=" + c.flag(ps)}})
			} else {
				edge = n.startEdge(t, "--proxy", c.flag(ps))
			}
			pullThrough(t, edge, im)
			if v := edge.Metric(t, "edge_proxy_dials_total", map[string]string{"node": c.name, "result": "ok"}); v < 1 {
				t.Errorf("edge_proxy_dials_total{node=%q,result=ok} = %v, want >= 1", c.name, v)
			}
		})
	}
}

// TestProxyFailoverDuringPulls kills the selected node's server in the
// middle of a loop of cold pulls: the loop goes on through the next node
// with no failed pull, the failover is counted, and — with a control
// plane — reported as a ProxyFailure.
//
// The control plane here is a fake (fakeCP) serving on the edge
// namespace's peer address, to check the report itself;
// TestProxyControlPlaneReselects runs the real one.
func TestProxyFailoverDuringPulls(t *testing.T) {
	t.Parallel()
	n := newProxyNet(t)
	const pulls, killAfter = 10, 3
	var images []harness.Image
	for i := range pulls {
		images = append(images, harness.PushImage(t, n.reg.Addr, fmt.Sprintf("loop/app%d", i), "v1", types.OCIManifestSchema1, 1, 64<<10))
	}
	for _, mode := range []string{"standalone", "control-plane"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			first := harness.StartShadowsocks(t, n.proxyOptions("first"))
			second := harness.StartShadowsocks(t, n.proxyOptions("second"))
			var edge *harness.Edge
			var cp *fakeCP
			if mode == "standalone" {
				// A node file keeps the passwords off the command line.
				nodes := filepath.Join(t.TempDir(), "nodes.txt")
				if err := os.WriteFile(nodes, []byte(first.Link+"\n"+second.Link+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				edge = n.startEdge(t, "--proxy", "@"+nodes)
			} else {
				cp = startFakeCP(t, n.edgeNS.HostAddr)
				cp.SetConfig(proxyConfig("v1", n.reg.URL, "", first, second))
				edge = n.startEdge(t, "--control-plane", cp.Addr, "--namespace", "team-a")
				if ack := next(t, cp.Acks); !ack.GetAccepted() {
					t.Fatalf("snapshot NACKed: %s", ack.GetErrorDetail())
				}
			}
			for i, im := range images {
				if i == killAfter {
					first.Kill()
				}
				pullThrough(t, edge, im)
			}
			if strings.Contains(edge.Proc.LogTail(1<<20), "harness-proxy-secret") {
				t.Error("the edge log holds a node password")
			}
			if v := edge.Metric(t, "edge_proxy_failovers_total", nil); v < 1 {
				t.Errorf("edge_proxy_failovers_total = %v, want >= 1", v)
			}
			if v := edge.Metric(t, "edge_proxy_dials_total", map[string]string{"node": "first", "result": "error"}); v < 1 {
				t.Errorf("failed dials through the killed node = %v, want >= 1", v)
			}
			if v := edge.Metric(t, "edge_proxy_dials_total", map[string]string{"node": "second", "result": "ok"}); v < 1 {
				t.Errorf("dials through the second node = %v, want >= 1", v)
			}
			if cp == nil {
				return
			}
			f := next(t, cp.Failures)
			if f.GetNode() != "first" || f.GetPrefix() != prefix || f.GetError() == "" {
				t.Errorf("ProxyFailure = %v, want node first, prefix %s", f, prefix)
			}
			if strings.Contains(f.GetError(), "harness-proxy-secret") {
				t.Errorf("ProxyFailure error holds the node password: %q", f.GetError())
			}
		})
	}
}

// TestProxyOverridePerUpstream: Upstream.proxy "direct" bypasses the
// selection (and, here, cannot reach the registry), a node name pins the
// upstream to that node, and an unknown name is NACKed.
func TestProxyOverridePerUpstream(t *testing.T) {
	t.Parallel()
	n := newProxyNet(t)
	a := harness.StartShadowsocks(t, n.proxyOptions("a"))
	b := harness.StartMicrosocks(t, n.proxyOptions("b"))
	cp := startFakeCP(t, n.edgeNS.HostAddr)
	cp.SetConfig(proxyConfig("v1", n.reg.URL, "direct", a, b))
	edge := n.startEdge(t, "--control-plane", cp.Addr, "--namespace", "team-a")
	if ack := next(t, cp.Acks); !ack.GetAccepted() {
		t.Fatalf("snapshot NACKed: %s", ack.GetErrorDetail())
	}
	im := harness.PushImage(t, n.reg.Addr, "override/app", "v1", types.OCIManifestSchema1, 1, 64<<10)
	wantUnreachable(t, edge, im, `an upstream with proxy "direct"`)

	cp.SetConfig(proxyConfig("v2", n.reg.URL, "b", a, b))
	if ack := next(t, cp.Acks); !ack.GetAccepted() {
		t.Fatalf("snapshot NACKed: %s", ack.GetErrorDetail())
	}
	pullThrough(t, edge, im)
	if v := edge.Metric(t, "edge_proxy_dials_total", map[string]string{"node": "a"}); v != 0 {
		t.Errorf("upstream pinned to b dialled through a %v times", v)
	}
	if v := edge.Metric(t, "edge_proxy_dials_total", map[string]string{"node": "b", "result": "ok"}); v < 1 {
		t.Errorf("upstream pinned to b: dials through b = %v", v)
	}

	cp.SetConfig(proxyConfig("v3", n.reg.URL, "nowhere", a, b))
	ack := next(t, cp.Acks)
	if ack.GetAccepted() || !strings.Contains(ack.GetErrorDetail(), "upstreams[0].proxy") {
		t.Fatalf("override naming an unknown node: ack %v, want a NACK naming upstreams[0].proxy", ack)
	}
}

// proxyConfig is a snapshot with upstream "test" (proxy override
// override) and an auto selection of nodes in order.
func proxyConfig(version, regURL, override string, nodes ...*harness.ProxyServer) *selfhostv1.EdgeConfig {
	sel := &selfhostv1.ProxySelection{Mode: selfhostv1.ProxyMode_PROXY_MODE_AUTO}
	for _, ps := range nodes {
		sel.Nodes = append(sel.Nodes, &selfhostv1.ProxyNode{Name: ps.Name, Type: ps.Type, ClashJson: ps.NodeJSON()})
	}
	return &selfhostv1.EdgeConfig{
		Version: version, Namespace: "team-a", Proxy: sel,
		Upstreams: []*selfhostv1.Upstream{{Prefix: prefix, Url: regURL, Proxy: override}},
	}
}

// wantUnreachable checks that edge cannot fetch im's manifest from the
// upstream: the edge's namespace has no route to the registry.
func wantUnreachable(t *testing.T, edge *harness.Edge, im harness.Image, who string) {
	t.Helper()
	r := do(t, "GET", edge.URL+"/v2/"+prefix+"/"+im.Repo+"/manifests/"+im.Tag, nil)
	if r.bodyErr != nil {
		t.Fatalf("%s: %v", who, r.bodyErr)
	}
	if r.status < 500 {
		t.Fatalf("%s reached the registry from the isolated namespace: status %d", who, r.status)
	}
}
