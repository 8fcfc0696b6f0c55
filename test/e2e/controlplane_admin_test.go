package e2e

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// adminCalls are the AdminService calls (docs/control-protocol.md, "6. Admin API"); each must be listed by
// describe and is run once by TestControlPlaneAdminCalls.
var adminCalls = []string{
	"ListEdges", "ListUpstreams", "PutUpstream", "DeleteUpstream",
	"GetNamespaceConfig", "Resolve", "GetCacheStats", "InvalidateTag",
}

// TestControlPlaneGrpcurlDiscovery: reflection needs a token (admin or
// edge), health needs none, so an operator explores the API with grpcurl
// -H 'authorization: Bearer …' and probes work anonymously.
func TestControlPlaneGrpcurlDiscovery(t *testing.T) {
	t.Parallel()
	e := newCPEnv(t)
	addr := e.cp.Addr
	bearer := "authorization: Bearer " + e.adminToken

	anon := harness.Grpcurl(t, nil, "-plaintext", addr, "list")
	wantGRPCStatus(t, anon, "Unauthenticated", "missing bearer token")

	list := harness.Grpcurl(t, nil, "-plaintext", "-H", bearer, addr, "list")
	if list.Err != nil {
		t.Fatalf("%s: %v\n%s", list.Cmd, list.Err, list.Output())
	}
	for _, svc := range []string{"selfhost.v1.AdminService", "selfhost.v1.ConfigDiscoveryService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !slices.Contains(strings.Fields(list.Stdout), svc) {
			t.Errorf("grpcurl list does not show %s:\n%s", svc, list.Stdout)
		}
	}

	desc := harness.Grpcurl(t, nil, "-plaintext", "-H", bearer, addr, "describe", "selfhost.v1.AdminService")
	if desc.Err != nil {
		t.Fatalf("%s: %v\n%s", desc.Cmd, desc.Err, desc.Output())
	}
	for _, m := range adminCalls {
		if !strings.Contains(desc.Stdout, "rpc "+m+" (") {
			t.Errorf("describe selfhost.v1.AdminService does not show rpc %s:\n%s", m, desc.Stdout)
		}
	}
	// describe of a message works too: reflection serves the whole file set.
	msg := harness.Grpcurl(t, nil, "-plaintext", "-H", "authorization: Bearer "+e.edgeTokens["team-a"], addr, "describe", "selfhost.v1.EdgeStatus")
	if msg.Err != nil || !strings.Contains(msg.Stdout, "acked_version") {
		t.Errorf("%s: %v\n%s", msg.Cmd, msg.Err, msg.Output())
	}

	// The token only fetches the schema; the health call itself carries none.
	health := harness.Grpcurl(t, nil, "-plaintext", "-reflect-header", bearer, addr, "grpc.health.v1.Health/Check")
	if health.Err != nil || !strings.Contains(health.Stdout, `"SERVING"`) {
		t.Errorf("%s: %v\n%s", health.Cmd, health.Err, health.Output())
	}
}

// TestControlPlaneAdminCalls runs every admin call once with grpcurl against
// a control plane with a real edge in each namespace, and checks its output
// and that no output shows a secret.
func TestControlPlaneAdminCalls(t *testing.T) {
	t.Parallel()
	e := newCPEnv(t)
	edgeA := e.startEdge(t, "team-a", "team-a")
	edgeB := e.startEdge(t, "team-b", "team-b")
	versions := map[string]string{"team-a": e.waitSynced(t, edgeA, "team-a"), "team-b": e.waitSynced(t, edgeB, "team-b")}

	// A pull through edge A: a miss, fetched from the private repository
	// with the credentials the control plane gave the edge.
	ref := e.img.Ref(edgeA.Addr, prefix)
	got, err := harness.CraneEnv(t, e.craneEnv(t, edgeA, "team-a"), "manifest", ref)
	if err != nil {
		t.Fatalf("pull through edge A: %v", err)
	}
	if !bytes.Equal(got, e.img.Manifest) {
		t.Fatalf("crane manifest %s differs from what was pushed", ref)
	}

	var outputs []harness.GrpcurlResult
	call := func(t *testing.T, method, body string, out proto.Message) {
		t.Helper()
		outputs = append(outputs, e.mustAdmin(t, method, body, out))
	}

	t.Run("ListEdges", func(t *testing.T) {
		// Stats come every --stats-interval (1 s); wait for the miss.
		e.waitEdges(t, "both edges with stats and edge A's miss", func(s []*selfhostv1.EdgeStatus) bool {
			a, b := listedEdge(s, edgeA.Addr), listedEdge(s, edgeB.Addr)
			return a != nil && b != nil && a.GetStats().GetCacheMisses() > 0 && b.GetStats() != nil
		})
		var resp selfhostv1.ListEdgesResponse
		call(t, "ListEdges", "{}", &resp)
		edges := resp.GetEdges()
		if len(edges) != 2 {
			t.Errorf("ListEdges shows %d edges, want 2: %v", len(edges), edges)
		}
		for _, c := range []struct {
			ns   string
			edge *harness.Edge
		}{{"team-a", edgeA}, {"team-b", edgeB}} {
			s := listedEdge(edges, c.edge.Addr)
			switch {
			case s == nil:
				t.Errorf("ListEdges does not show the %s edge at %s", c.ns, c.edge.Addr)
				continue
			case s.GetNamespace() != c.ns:
				t.Errorf("edge %s: namespace %q, want %q", c.edge.Addr, s.GetNamespace(), c.ns)
			case !strings.HasPrefix(s.GetPod(), "edge-"+c.ns+"-"):
				t.Errorf("edge %s: pod %q, want the --pod-name edge-%s-N", c.edge.Addr, s.GetPod(), c.ns)
			case s.GetAckedVersion() != versions[c.ns] || s.GetSentVersion() != versions[c.ns]:
				t.Errorf("edge %s: acked %q sent %q, want %s", c.edge.Addr, s.GetAckedVersion(), s.GetSentVersion(), versions[c.ns])
			case s.GetConnectedSince() == nil || s.GetEdgeVersion() == "" || s.GetNackReason() != "":
				t.Errorf("edge %s: connected since %v, edge version %q, NACK %q", c.edge.Addr, s.GetConnectedSince(), s.GetEdgeVersion(), s.GetNackReason())
			}
		}
		filtered := e.mustAdmin(t, "ListEdges", `{"namespace":"team-b"}`, &resp)
		outputs = append(outputs, filtered)
		if len(resp.GetEdges()) != 1 || resp.GetEdges()[0].GetAddress() != edgeB.Addr {
			t.Errorf("ListEdges{namespace: team-b} = %v, want only edge B", resp.GetEdges())
		}
	})

	t.Run("ListUpstreams", func(t *testing.T) {
		var resp selfhostv1.ListUpstreamsResponse
		call(t, "ListUpstreams", "{}", &resp)
		var prefixes []string
		for _, u := range resp.GetUpstreams() {
			prefixes = append(prefixes, u.GetPrefix())
			if u.GetPrefix() == prefix && (u.GetUrl() != e.tok.URL || !u.GetHasCredentials() || u.GetTagTtl().AsDuration() != time.Second || !slices.Equal(u.GetHosts(), []string{testHost})) {
				t.Errorf("upstream test = %v, want url %s, credentials, tag TTL 1s, hosts [%s]", u, e.tok.URL, testHost)
			}
		}
		if want := []string{"dockerhub", "quay", "test"}; !slices.Equal(prefixes, want) {
			t.Errorf("ListUpstreams prefixes %v, want %v (sorted)", prefixes, want)
		}
	})

	t.Run("PutUpstream and DeleteUpstream", func(t *testing.T) {
		extraPass := "extra-pass-" + cpSecret(t)
		var put selfhostv1.PutUpstreamResponse
		r := e.mustAdmin(t, "PutUpstream", fmt.Sprintf(`{"upstream":{"prefix":"extra","url":"http://127.0.0.1:9","credentials":{"username":"u","password":%q}}}`, extraPass), &put)
		outputs = append(outputs, r)
		if strings.Contains(r.Output(), extraPass) {
			t.Errorf("PutUpstream output shows the password it was given:\n%s", r.Output())
		}
		if put.GetUpstream().GetPrefix() != "extra" || !put.GetUpstream().GetHasCredentials() || put.GetConfigVersion() == "" {
			t.Errorf("PutUpstream = %v, want prefix extra with credentials and a config version", &put)
		}
		// The change reaches both edges (an upstream affects every namespace).
		for ns, edge := range map[string]*harness.Edge{"team-a": edgeA, "team-b": edgeB} {
			if v := e.waitSynced(t, edge, ns); v == versions[ns] {
				t.Errorf("%s version unchanged by PutUpstream", ns)
			}
		}

		var del selfhostv1.DeleteUpstreamResponse
		call(t, "DeleteUpstream", `{"prefix":"extra"}`, &del)
		if del.GetConfigVersion() == "" || del.GetConfigVersion() == put.GetConfigVersion() {
			t.Errorf("DeleteUpstream config version %q (after put %q)", del.GetConfigVersion(), put.GetConfigVersion())
		}
		var list selfhostv1.ListUpstreamsResponse
		call(t, "ListUpstreams", "{}", &list)
		for _, u := range list.GetUpstreams() {
			if u.GetPrefix() == "extra" {
				t.Errorf("ListUpstreams still shows extra after DeleteUpstream")
			}
		}
		// Versions are content hashes: undoing the change restores them.
		for ns, edge := range map[string]*harness.Edge{"team-a": edgeA, "team-b": edgeB} {
			if v := e.waitSynced(t, edge, ns); v != versions[ns] {
				t.Errorf("%s version after put+delete %s, want the original %s", ns, v, versions[ns])
			}
		}
	})

	t.Run("GetNamespaceConfig", func(t *testing.T) {
		var resp selfhostv1.GetNamespaceConfigResponse
		call(t, "GetNamespaceConfig", `{"namespace":"team-a"}`, &resp)
		c := resp.GetConfig()
		if !resp.GetHasPullToken() || c.GetNamespace() != "team-a" || c.GetVersion() != versions["team-a"] {
			t.Errorf("GetNamespaceConfig team-a: has pull token %v, namespace %q, version %q (want true, team-a, %s)",
				resp.GetHasPullToken(), c.GetNamespace(), c.GetVersion(), versions["team-a"])
		}
		if c.GetPolicy().GetPullToken() != "" {
			t.Errorf("GetNamespaceConfig returns the pull token")
		}
		for _, u := range c.GetUpstreams() {
			if u.GetCredentials() != nil {
				t.Errorf("GetNamespaceConfig returns credentials of upstream %s", u.GetPrefix())
			}
		}
	})

	t.Run("Resolve", func(t *testing.T) {
		for _, c := range []struct {
			image                       string
			rewritten, prefix, upstream string
			untouched                   string // part of untouched_reason
		}{
			{image: "nginx:latest", rewritten: edgeA.Addr + "/dockerhub/library/nginx:latest", prefix: "dockerhub",
				upstream: "https://registry-1.docker.io/v2/library/nginx/manifests/latest"},
			// The test upstream by one of its hosts: rewritten to the edge.
			{image: testHost + "/app/x:v1", rewritten: edgeA.Addr + "/test/app/x:v1", prefix: prefix,
				upstream: e.tok.URL + "/v2/app/x/manifests/v1"},
			// The same upstream by its URL's host, 127.0.0.1:<port>: a node
			// pulls loopback registries itself, so Resolve leaves it.
			{image: e.tok.Addr + "/app/x:v1", rewritten: e.tok.Addr + "/app/x:v1", untouched: "loopback"},
		} {
			var resp selfhostv1.ResolveResponse
			call(t, "Resolve", fmt.Sprintf(`{"namespace":"team-a","image":%q}`, c.image), &resp)
			if resp.GetRewritten() != c.rewritten || resp.GetPrefix() != c.prefix || resp.GetUpstreamUrl() != c.upstream ||
				!strings.Contains(resp.GetUntouchedReason(), c.untouched) || (c.untouched == "") != (resp.GetUntouchedReason() == "") {
				t.Errorf("Resolve %s = %v\nwant rewritten %q prefix %q upstream_url %q untouched %q",
					c.image, &resp, c.rewritten, c.prefix, c.upstream, c.untouched)
			}
		}
	})

	t.Run("GetCacheStats", func(t *testing.T) {
		var all, a selfhostv1.GetCacheStatsResponse
		call(t, "GetCacheStats", "{}", &all)
		call(t, "GetCacheStats", `{"namespace":"team-a"}`, &a)
		if all.GetEdges() != 2 || a.GetEdges() != 1 {
			t.Errorf("GetCacheStats counts %d edges (team-a: %d), want 2 (1)", all.GetEdges(), a.GetEdges())
		}
		if a.GetTotal().GetCacheMisses() == 0 || all.GetTotal().GetCacheMisses() < a.GetTotal().GetCacheMisses() {
			t.Errorf("GetCacheStats misses: all %d, team-a %d; want team-a > 0 and all ≥ team-a",
				all.GetTotal().GetCacheMisses(), a.GetTotal().GetCacheMisses())
		}
	})

	t.Run("InvalidateTag", func(t *testing.T) {
		var resp selfhostv1.InvalidateTagResponse
		call(t, "InvalidateTag", `{"namespace":"team-a","tag":{"prefix":"test","repository":"cp/app","tag":"v1"}}`, &resp)
		if resp.GetEdgesNotified() != 1 {
			t.Errorf("InvalidateTag notified %d edges, want 1 (team-a's)", resp.GetEdgesNotified())
		}
		waitCPLog(t, edgeA.Proc, `"msg":"tag invalidated"`)
	})

	t.Run("no secrets in any output", func(t *testing.T) {
		for _, r := range outputs {
			e.noSecrets(t, r.Cmd, r.Output())
		}
		e.noSecrets(t, "the control plane log", e.cp.Proc.LogTail(1<<30))
		e.noSecrets(t, "edge A's log", edgeA.Proc.LogTail(1<<30))
		e.noSecrets(t, "edge B's log", edgeB.Proc.LogTail(1<<30))
	})
}

// waitCPLog waits until the process log contains s.
func waitCPLog(t *testing.T, p *harness.Process, s string) {
	t.Helper()
	testkit.WaitFor(t, p.Name+" logging "+s, syncTimeout, func() bool { return strings.Contains(p.LogTail(1<<30), s) })
}
