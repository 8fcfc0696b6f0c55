package grpcserver_test

import (
	"crypto/rand"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/clash/clashtest"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/grpcserver/servertest"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/clashnode"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// clashEnv is a control plane with Clash enabled over real proxy servers:
// ss-server, microsocks (with a password) and tinyproxy, served as a
// Clash YAML subscription whose URL carries a token.
type clashEnv struct {
	*servertest.Env
	sub     *clashtest.Subscription
	target  *clashtest.ProbeTarget
	servers map[string]*harness.ProxyServer
}

func startClash(t *testing.T, probeInterval string) *clashEnv {
	t.Helper()
	ce := &clashEnv{target: clashtest.StartProbeTarget(t), servers: map[string]*harness.ProxyServer{
		"ss":    harness.StartShadowsocks(t, harness.ProxyOptions{Name: "ss"}),
		"socks": harness.StartMicrosocks(t, harness.ProxyOptions{Name: "socks", Username: "puller", Password: "socks-pw-" + rand.Text()}),
		"http":  harness.StartTinyproxy(t, harness.ProxyOptions{Name: "http"}),
	}}
	ce.sub = clashtest.StartSubscription(t, clashtest.ClashYAML(ce.servers["ss"].Node, ce.servers["socks"].Node, ce.servers["http"].Node))
	cfg := servertest.DefaultConfig + fmt.Sprintf(`
clash:
  enabled: true
  subscriptionUrl: %q
  probeUrl: %q
  probeInterval: %s
  probeTimeout: 1s
`, ce.sub.SubURL(), ce.target.V2(), probeInterval)
	ce.Env = servertest.Start(t, servertest.Options{Config: cfg, Debounce: 20 * time.Millisecond})
	return ce
}

// secrets are the values no admin response and no log line may hold.
func (ce *clashEnv) secrets() []string {
	return []string{ce.sub.Token, ce.servers["ss"].Password, ce.servers["socks"].Password, servertest.UpstreamSecret, servertest.PullTokenA}
}

// nextConfigWhere ACKs configs until one satisfies cond.
func nextConfigWhere(t *testing.T, edge *servertest.Edge, what string, cond func(*selfhostv1.EdgeConfig) bool) *selfhostv1.EdgeConfig {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		m, err := edge.Next(t, time.Until(deadline))
		if err != nil {
			t.Fatalf("stream ended waiting for %s: %v", what, err)
		}
		if cfg := m.GetConfig(); cfg != nil {
			edge.Ack(t, cfg, true, "")
			if cond(cfg) {
				return cfg
			}
		}
	}
	t.Fatalf("no config with %s", what)
	return nil
}

func nodeNames(cfg *selfhostv1.EdgeConfig) string {
	var out []string
	for _, n := range cfg.GetProxy().GetNodes() {
		out = append(out, n.GetName())
	}
	return strings.Join(out, " ")
}

func listProxyNodes(t *testing.T, env *servertest.Env) *selfhostv1.ListProxyNodesResponse {
	t.Helper()
	resp, err := env.Admin.ListProxyNodes(adminCtx(t), &selfhostv1.ListProxyNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestClashEndToEnd: the subscription is fetched, every node probed
// through its real server, the selection pushed to the edge with nodes it
// can build dialers from; killing the selected node's server moves the
// selection, and the edge receives it.
func TestClashEndToEnd(t *testing.T) {
	t.Parallel()
	ce := startClash(t, "100ms")
	edge := servertest.OpenEdge(t, ce.Conn, servertest.EdgeToken("team-a"), servertest.Hello("team-a", "edge-0", ""))
	cfg := nextConfigWhere(t, edge, "three nodes", func(c *selfhostv1.EdgeConfig) bool { return len(c.GetProxy().GetNodes()) == 3 })
	if cfg.GetProxy().GetMode() != selfhostv1.ProxyMode_PROXY_MODE_AUTO {
		t.Fatalf("mode %v", cfg.GetProxy().GetMode())
	}
	for _, n := range cfg.GetProxy().GetNodes() {
		if _, err := clashnode.FromProto(n); err != nil { // what the edge does
			t.Fatalf("node %s does not build: %v", n.GetName(), err)
		}
	}
	selected := cfg.GetProxy().GetNodes()[0].GetName()
	list := listProxyNodes(t, ce.Env)
	if list.GetMode() != selfhostv1.ProxyMode_PROXY_MODE_AUTO || len(list.GetNodes()) != 3 || list.GetSubscriptionFetched() == nil || list.GetSubscriptionError() != "" {
		t.Fatalf("ListProxyNodes = %v", list)
	}
	for _, n := range list.GetNodes() {
		if !n.GetAlive() || n.GetSelected() != (n.GetName() == selected) || n.GetServer() != ce.servers[n.GetName()].Addr || len(n.GetHistory()) == 0 || n.GetLastChecked() == nil {
			t.Errorf("node %v", n)
		}
	}

	ce.servers[selected].Kill()
	next := nextConfigWhere(t, edge, "the killed node gone", func(c *selfhostv1.EdgeConfig) bool {
		return !strings.Contains(" "+nodeNames(c)+" ", " "+selected+" ")
	})
	if len(next.GetProxy().GetNodes()) != 2 {
		t.Fatalf("nodes after the kill: %s", nodeNames(next))
	}
	for _, n := range listProxyNodes(t, ce.Env).GetNodes() {
		if n.GetName() == selected && (n.GetAlive() || n.GetLastError() == "" || n.GetSelected()) {
			t.Errorf("killed node shown as %v", n)
		}
	}

	// Secrets: in no admin response, in no log line.
	ctx := adminCtx(t)
	var responses []proto.Message
	add := func(m proto.Message, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		responses = append(responses, m)
	}
	add(ce.Admin.ListProxyNodes(ctx, &selfhostv1.ListProxyNodesRequest{}))
	add(ce.Admin.RefreshSubscription(ctx, &selfhostv1.RefreshSubscriptionRequest{}))
	add(ce.Admin.SelectProxyNode(ctx, &selfhostv1.SelectProxyNodeRequest{Name: next.GetProxy().GetNodes()[0].GetName()}))
	add(ce.Admin.SetProxyMode(ctx, &selfhostv1.SetProxyModeRequest{Mode: selfhostv1.ProxyMode_PROXY_MODE_AUTO}))
	add(ce.Admin.GetNamespaceConfig(ctx, &selfhostv1.GetNamespaceConfigRequest{Namespace: "team-a"}))
	ce.sub.Set(http.StatusInternalServerError, nil)
	_, err := ce.Admin.RefreshSubscription(ctx, &selfhostv1.RefreshSubscriptionRequest{})
	add(status.Convert(err).Proto(), nil)
	add(ce.Admin.ListProxyNodes(ctx, &selfhostv1.ListProxyNodesRequest{}))
	nsCfg := responses[4].(*selfhostv1.GetNamespaceConfigResponse)
	if len(nsCfg.GetConfig().GetProxy().GetNodes()) == 0 {
		t.Error("GetNamespaceConfig shows no proxy nodes")
	}
	for _, n := range nsCfg.GetConfig().GetProxy().GetNodes() {
		if n.GetClashJson() != "" {
			t.Errorf("GetNamespaceConfig returns the Clash map of %s", n.GetName())
		}
	}
	for _, m := range responses {
		js, err := protojson.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range ce.secrets() {
			if strings.Contains(string(js), s) {
				t.Errorf("%T leaks %q: %s", m, s, js)
			}
		}
	}
	ce.Stop(t)
	logs := ce.Logs.String()
	for _, line := range []string{"subscription fetched", "proxy selection changed", "proxy node is down", "subscription fetch failed"} {
		if !strings.Contains(logs, line) {
			t.Errorf("no %q in the log", line)
		}
	}
	for _, s := range ce.secrets() {
		if strings.Contains(logs, s) {
			t.Errorf("log leaks %q", s)
		}
	}
}

// TestProxyFailureReportReselects: probes are hourly, so only the edge's
// report can notice the dead node; the re-selection reaches the edge.
func TestProxyFailureReportReselects(t *testing.T) {
	t.Parallel()
	ce := startClash(t, "1h")
	edge := servertest.OpenEdge(t, ce.Conn, servertest.EdgeToken("team-a"), servertest.Hello("team-a", "edge-0", ""))
	cfg := nextConfigWhere(t, edge, "three nodes", func(c *selfhostv1.EdgeConfig) bool { return len(c.GetProxy().GetNodes()) == 3 })
	selected := cfg.GetProxy().GetNodes()[0].GetName()
	ce.servers[selected].Kill()
	reported := time.Now()
	edge.Send(t, &selfhostv1.StreamConfigRequest{Kind: &selfhostv1.StreamConfigRequest_ProxyFailure{ProxyFailure: &selfhostv1.ProxyFailure{
		Node: selected, Prefix: "dockerhub", Error: "dial tcp: connection refused",
	}}})
	next := nextConfigWhere(t, edge, "a new selection", func(c *selfhostv1.EdgeConfig) bool {
		return len(c.GetProxy().GetNodes()) == 2 && c.GetProxy().GetNodes()[0].GetName() != selected
	})
	t.Logf("report of a dead node → new selection at the edge: %v (debounce 20ms)", time.Since(reported))
	for _, n := range listProxyNodes(t, ce.Env).GetNodes() {
		if n.GetName() == selected && (n.GetAlive() || !strings.Contains(n.GetLastError(), "refused")) {
			t.Errorf("reported node: %v", n)
		}
	}
	// The stream survives reports, even about unknown nodes.
	edge.Send(t, &selfhostv1.StreamConfigRequest{Kind: &selfhostv1.StreamConfigRequest_ProxyFailure{ProxyFailure: &selfhostv1.ProxyFailure{Node: "nope"}}})
	edge.ExpectNothing(t, quiet)
	if got := listEdges(t, ce.Env, "team-a"); len(got) != 1 || got[0].GetAckedVersion() != next.GetVersion() {
		t.Fatalf("edges %v", got)
	}
}

// TestClashAdminCalls: each proxy admin call, its refusals, and what
// edges receive; the mode and an upstream's proxy survive a restart.
func TestClashAdminCalls(t *testing.T) {
	t.Parallel()
	ce := startClash(t, "1h")
	ctx := adminCtx(t)
	edge := servertest.OpenEdge(t, ce.Conn, servertest.EdgeToken("team-a"), servertest.Hello("team-a", "edge-0", ""))
	nextConfigWhere(t, edge, "three nodes", func(c *selfhostv1.EdgeConfig) bool { return len(c.GetProxy().GetNodes()) == 3 })

	refusals := []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{"select unknown", func() error {
			_, err := ce.Admin.SelectProxyNode(ctx, &selfhostv1.SelectProxyNodeRequest{Name: "nope"})
			return err
		}, codes.NotFound, `"nope" is not in the subscription`},
		{"select empty", func() error {
			_, err := ce.Admin.SelectProxyNode(ctx, &selfhostv1.SelectProxyNodeRequest{})
			return err
		}, codes.InvalidArgument, "name: must not be empty"},
		{"pinned without a node", func() error {
			_, err := ce.Admin.SetProxyMode(ctx, &selfhostv1.SetProxyModeRequest{Mode: selfhostv1.ProxyMode_PROXY_MODE_PINNED})
			return err
		}, codes.FailedPrecondition, "SelectProxyNode"},
		{"unspecified mode", func() error {
			_, err := ce.Admin.SetProxyMode(ctx, &selfhostv1.SetProxyModeRequest{})
			return err
		}, codes.InvalidArgument, "mode: want"},
		{"upstream names an unknown node", func() error {
			_, err := ce.Admin.PutUpstream(ctx, &selfhostv1.PutUpstreamRequest{Upstream: &selfhostv1.Upstream{Prefix: "gcr", Url: "https://gcr.io", Proxy: "nope"}})
			return err
		}, codes.InvalidArgument, `upstream.proxy: no node "nope"`},
		{"upstream proxy with control characters", func() error {
			_, err := ce.Admin.PutUpstream(ctx, &selfhostv1.PutUpstreamRequest{Upstream: &selfhostv1.Upstream{Prefix: "gcr", Url: "https://gcr.io", Proxy: "a\nb"}})
			return err
		}, codes.InvalidArgument, "upstream.proxy"},
	}
	for _, tc := range refusals {
		if err := tc.call(); status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
			t.Errorf("%s: %v, want %s containing %q", tc.name, err, tc.code, tc.msg)
		}
	}
	edge.ExpectNothing(t, quiet)

	sel, err := ce.Admin.SelectProxyNode(ctx, &selfhostv1.SelectProxyNodeRequest{Name: "http"})
	if err != nil || !sel.GetSelected().GetSelected() || sel.GetSelected().GetName() != "http" {
		t.Fatalf("SelectProxyNode = %v, %v", sel, err)
	}
	nextConfigWhere(t, edge, "http pinned", func(c *selfhostv1.EdgeConfig) bool {
		return c.GetProxy().GetMode() == selfhostv1.ProxyMode_PROXY_MODE_PINNED && c.GetProxy().GetNodes()[0].GetName() == "http"
	})

	if m, err := ce.Admin.SetProxyMode(ctx, &selfhostv1.SetProxyModeRequest{Mode: selfhostv1.ProxyMode_PROXY_MODE_DIRECT}); err != nil || m.GetMode() != selfhostv1.ProxyMode_PROXY_MODE_DIRECT {
		t.Fatalf("SetProxyMode(direct) = %v, %v", m, err)
	}
	nextConfigWhere(t, edge, "direct", func(c *selfhostv1.EdgeConfig) bool {
		return c.GetProxy().GetMode() == selfhostv1.ProxyMode_PROXY_MODE_DIRECT && len(c.GetProxy().GetNodes()) == 0
	})

	// A private registry through one node while the rest goes direct.
	putUpstream(t, ce.Env, &selfhostv1.Upstream{Prefix: "gcr", Url: "https://gcr.io", Proxy: "socks"})
	putUpstream(t, ce.Env, &selfhostv1.Upstream{Prefix: "mcr", Url: "https://mcr.microsoft.com", Proxy: "direct"})
	cfg := nextConfigWhere(t, edge, "the socks node for gcr", func(c *selfhostv1.EdgeConfig) bool {
		return nodeNames(c) == "socks" && len(c.GetUpstreams()) == 7
	})
	for _, u := range cfg.GetUpstreams() {
		if want := map[string]string{"gcr": "socks", "mcr": "direct"}[u.GetPrefix()]; u.GetProxy() != want {
			t.Errorf("upstream %s proxy %q, want %q", u.GetPrefix(), u.GetProxy(), want)
		}
	}

	res, err := ce.Admin.RefreshSubscription(ctx, &selfhostv1.RefreshSubscriptionRequest{})
	if err != nil || res.GetNodes() != 3 || len(res.GetSkipped()) != 0 {
		t.Fatalf("RefreshSubscription = %v, %v", res, err)
	}
	ce.sub.Set(http.StatusOK, []byte("proxies:\n  - {name: x, type: warp, server: a, port: 1}\n"))
	_, err = ce.Admin.RefreshSubscription(ctx, &selfhostv1.RefreshSubscriptionRequest{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "no usable node") || strings.Contains(err.Error(), ce.sub.Token) {
		t.Fatalf("RefreshSubscription of a bad subscription = %v", err)
	}
	if list := listProxyNodes(t, ce.Env); len(list.GetNodes()) != 3 || !strings.Contains(list.GetSubscriptionError(), "no usable node") {
		t.Fatalf("pool not kept after a bad fetch: %v", list)
	}

	// Restart on the same state: direct mode and gcr's node survive.
	ce.sub.Set(http.StatusOK, clashtest.ClashYAML(ce.servers["ss"].Node, ce.servers["socks"].Node, ce.servers["http"].Node))
	ce.Stop(t)
	again := servertest.Start(t, servertest.Options{Dir: ce.Dir, Debounce: 20 * time.Millisecond})
	testkit.WaitFor(t, "the pool after the restart", 10*time.Second, func() bool { return len(listProxyNodes(t, again).GetNodes()) == 3 })
	if m := listProxyNodes(t, again).GetMode(); m != selfhostv1.ProxyMode_PROXY_MODE_DIRECT {
		t.Fatalf("mode after restart %v", m)
	}
	edge2 := servertest.OpenEdge(t, again.Conn, servertest.EdgeToken("team-a"), servertest.Hello("team-a", "edge-0", ""))
	nextConfigWhere(t, edge2, "gcr's node after the restart", func(c *selfhostv1.EdgeConfig) bool { return nodeNames(c) == "socks" })
}

// TestClashDisabled: the proxy calls say how to enable Clash, an upstream
// may not name a node, and an edge's failure report is harmless.
func TestClashDisabled(t *testing.T) {
	t.Parallel()
	env := start(t)
	ctx := adminCtx(t)
	edge := servertest.OpenEdge(t, env.Conn, servertest.EdgeToken("team-a"), servertest.Hello("team-a", "edge-0", ""))
	if cfg := edge.NextConfig(t); cfg.GetProxy() != nil {
		t.Fatalf("proxy selection without Clash: %v", cfg.GetProxy())
	}
	_, err := env.Admin.ListProxyNodes(ctx, &selfhostv1.ListProxyNodesRequest{})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "clash.enabled") {
		t.Fatalf("ListProxyNodes = %v", err)
	}
	_, err = env.Admin.PutUpstream(ctx, &selfhostv1.PutUpstreamRequest{Upstream: &selfhostv1.Upstream{Prefix: "gcr", Url: "https://gcr.io", Proxy: "hk-1"}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "upstream.proxy") {
		t.Fatalf("PutUpstream naming a node = %v", err)
	}
	putUpstream(t, env, &selfhostv1.Upstream{Prefix: "gcr", Url: "https://gcr.io", Proxy: "direct"})
	edge.NextConfig(t)
	edge.Send(t, &selfhostv1.StreamConfigRequest{Kind: &selfhostv1.StreamConfigRequest_ProxyFailure{ProxyFailure: &selfhostv1.ProxyFailure{Node: "x"}}})
	edge.ExpectNothing(t, quiet)
}
