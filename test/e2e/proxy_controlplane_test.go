package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// TestProxyControlPlaneReselects runs the real control plane with a Clash
// subscription (share links served by a local HTTP server) and a real edge
// in the isolated namespace. The edge pulls through the selected node;
// the selected node's server is killed during a loop of cold pulls; the
// loop goes on with no failed pull (the edge fails over at once), the
// edge reports the failure, and the control plane re-probes the node and
// selects another one — which ListProxyNodes shows, through grpcurl.
//
// Periodic probes are off (1 h) so that the new selection can only come
// from the edge's report.
func TestProxyControlPlaneReselects(t *testing.T) {
	t.Parallel()
	n := newProxyNet(t)
	nodes := map[string]*harness.ProxyServer{
		"node-a": harness.StartShadowsocks(t, n.proxyOptions("node-a")),
		"node-b": harness.StartShadowsocks(t, n.proxyOptions("node-b")),
	}
	sub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, nodes["node-a"].Link+"\n"+nodes["node-b"].Link+"\n")
	}))
	t.Cleanup(sub.Close)

	admin, edgeToken := "admin-"+cpSecret(t), "edge-"+cpSecret(t)
	cp := harness.StartControlPlane(t, fmt.Sprintf(`adminTokens: [%q]
upstreams:
  - {prefix: %s, url: %q}
namespaces:
  team-a:
    edgeToken: %q
clash:
  enabled: true
  subscriptionUrl: %q
  refreshInterval: 1h
  probeInterval: 1h
  probeTimeout: 3s
  mode: auto
`, admin, prefix, n.reg.URL, edgeToken, sub.URL+"/sub?token=sub-secret"))
	listNodes := func() *selfhostv1.ListProxyNodesResponse {
		t.Helper()
		r := cp.AdminCall(t, admin, "ListProxyNodes", "{}")
		if r.Err != nil {
			t.Fatalf("ListProxyNodes: %v\n%s", r.Err, r.Output())
		}
		var resp selfhostv1.ListProxyNodesResponse
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal([]byte(r.Stdout), &resp); err != nil {
			t.Fatalf("ListProxyNodes output: %v\n%s", err, r.Stdout)
		}
		return &resp
	}
	selected := func(resp *selfhostv1.ListProxyNodesResponse) *selfhostv1.ProxyNodeStatus {
		for _, s := range resp.GetNodes() {
			if s.GetSelected() {
				return s
			}
		}
		return nil
	}
	var first *selfhostv1.ProxyNodeStatus
	waitFor(t, "a selected node", func() bool { first = selected(listNodes()); return first != nil })
	t.Logf("control plane selected %s", first.GetName())

	// The edge lives in its own namespace; the control plane listens on
	// loopback, so a forwarder on the namespace's peer address connects
	// the two.
	fwd := forward(t, n.edgeNS.HostAddr, cp.Addr)
	tokenFile := filepath.Join(t.TempDir(), "edge-token")
	if err := os.WriteFile(tokenFile, []byte(edgeToken), 0o600); err != nil {
		t.Fatal(err)
	}
	edge := harness.StartEdgeIn(t, n.edgeNS, harness.EdgeOptions{Args: []string{
		"--namespace", "team-a", "--pod-name", "edge-proxy-0", "--control-plane", fwd,
		"--control-plane-token-file", tokenFile, "--log-level", "debug",
	}})
	var cfg selfhostv1.GetNamespaceConfigResponse
	r := cp.AdminCall(t, admin, "GetNamespaceConfig", `{"namespace":"team-a"}`)
	if err := protojson.Unmarshal([]byte(r.Stdout), &cfg); r.Err != nil || err != nil {
		t.Fatalf("GetNamespaceConfig: %v %v\n%s", r.Err, err, r.Output())
	}
	edge.WaitReadiness(t, "the snapshot with the selection", syncTimeout, func(rd harness.EdgeReadiness) bool {
		return rd.ControlPlane == "connected" && rd.ConfigVersion == cfg.GetConfig().GetVersion()
	})

	const pulls, killAfter = 8, 2
	for i := range pulls {
		im := harness.PushImage(t, n.reg.Addr, fmt.Sprintf("cpproxy/app%d", i), "v1", types.OCIManifestSchema1, 1, 64<<10)
		if i == killAfter {
			nodes[first.GetName()].Kill()
		}
		pullThrough(t, edge, im)
	}
	if v := edge.Metric(t, "edge_proxy_dials_total", map[string]string{"node": first.GetName(), "result": "ok"}); v < 1 {
		t.Errorf("no dial went through the first selection %s before it died", first.GetName())
	}
	if v := edge.Metric(t, "edge_proxy_failovers_total", nil); v < 1 {
		t.Errorf("edge_proxy_failovers_total = %v, want >= 1", v)
	}

	t.Logf("%d pulls done; %s killed before pull %d", pulls, first.GetName(), killAfter+1)
	var now *selfhostv1.ListProxyNodesResponse
	waitFor(t, "a new selection after the edge's report", func() bool {
		now = listNodes()
		s := selected(now)
		return s != nil && s.GetName() != first.GetName()
	})
	t.Logf("control plane selected %s", selected(now).GetName())
	for _, s := range now.GetNodes() {
		if s.GetName() == first.GetName() && s.GetAlive() {
			t.Errorf("killed node %s still alive in ListProxyNodes", s.GetName())
		}
	}
	if log := cp.Proc.LogTail(1 << 20); !strings.Contains(log, "edge reported a proxy failure") || !strings.Contains(log, first.GetName()) {
		t.Errorf("the control plane logged no edge report about %s", first.GetName())
	}
	for _, secret := range []string{"harness-proxy-secret", "sub-secret"} {
		if strings.Contains(edge.Proc.LogTail(1<<20), secret) || strings.Contains(now.String(), secret) {
			t.Errorf("a secret (%s) leaked into the edge log or ListProxyNodes", secret)
		}
	}
	// The new selection reached the edge: pulls go to the new node with no
	// failover.
	before := edge.Metric(t, "edge_proxy_failovers_total", nil)
	r = cp.AdminCall(t, admin, "GetNamespaceConfig", `{"namespace":"team-a"}`)
	cfg.Reset()
	if err := protojson.Unmarshal([]byte(r.Stdout), &cfg); r.Err != nil || err != nil {
		t.Fatalf("GetNamespaceConfig: %v %v", r.Err, err)
	}
	edge.WaitReadiness(t, "the new selection", syncTimeout, func(rd harness.EdgeReadiness) bool {
		return rd.ConfigVersion == cfg.GetConfig().GetVersion()
	})
	pullThrough(t, edge, harness.PushImage(t, n.reg.Addr, "cpproxy/after", "v1", types.OCIManifestSchema1, 1, 64<<10))
	if after := edge.Metric(t, "edge_proxy_failovers_total", nil); after != before {
		t.Errorf("failovers went from %v to %v after the new selection was pushed", before, after)
	}
}

// waitFor polls cond every 100 ms until it holds or syncTimeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, what, syncTimeout, cond)
}

// forward accepts on host (a free port) and copies every connection to
// target; it returns the listening address.
func forward(t *testing.T, host, target string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(u, c); done <- struct{}{} }()
				go func() { _, _ = io.Copy(c, u); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	return l.Addr().String()
}
