package grpcserver_test

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/grpcserver"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/grpcserver/servertest"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/snapshot"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/configspec"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

const quiet = 150 * time.Millisecond // "nothing arrives" window, 3× the test debounce

func start(t *testing.T) *servertest.Env {
	t.Helper()
	return servertest.Start(t, servertest.Options{Debounce: 50 * time.Millisecond})
}

func adminCtx(t *testing.T) context.Context {
	return servertest.AdminContext(t.Context())
}

func TestStreamHelloSnapshotAck(t *testing.T) {
	t.Parallel()
	env := start(t)
	edge := servertest.OpenEdge(t, env.Conn, servertest.EdgeToken("team-a"), servertest.Hello("team-a", "edge-0", ""))
	cfg := edge.NextConfig(t)

	if cfg.GetNamespace() != "team-a" || cfg.GetNonce() == "" {
		t.Fatalf("config namespace %q nonce %q", cfg.GetNamespace(), cfg.GetNonce())
	}
	if err := configspec.ValidateEdgeConfig(cfg); err != nil {
		t.Fatalf("snapshot does not validate: %v", err)
	}
	if v, _ := snapshot.Version(cfg); v != cfg.GetVersion() || len(v) != 16 {
		t.Fatalf("version %q, recomputed %q", cfg.GetVersion(), v)
	}
	// The edge needs its secrets: credentials and the pull token travel on
	// the authenticated stream.
	if cfg.GetPolicy().GetPullToken() != servertest.PullTokenA {
		t.Errorf("pull token missing from the snapshot")
	}
	if !strings.Contains(cfg.String(), servertest.UpstreamSecret) {
		t.Errorf("upstream credentials missing from the snapshot")
	}

	edges, err := env.Admin.ListEdges(adminCtx(t), &selfhostv1.ListEdgesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(edges.GetEdges()) != 1 || edges.GetEdges()[0].GetSentVersion() != cfg.GetVersion() || edges.GetEdges()[0].GetAckedVersion() != "" {
		t.Fatalf("before the ACK: %v", edges)
	}
	edge.Ack(t, cfg, true, "")
	testkit.WaitFor(t, "ACK recorded", 10*time.Second, func() bool {
		e := listEdges(t, env, "team-a")
		return len(e) == 1 && e[0].GetAckedVersion() == cfg.GetVersion() && e[0].GetPod() == "edge-0"
	})
}

func TestStreamNackShownInListEdges(t *testing.T) {
	t.Parallel()
	env := start(t)
	edge := servertest.OpenEdge(t, env.Conn, servertest.EdgeToken("team-a"), servertest.Hello("", "edge-0", ""))
	first := edge.NextConfig(t)
	edge.Ack(t, first, true, "")
	putUpstream(t, env, &selfhostv1.Upstream{Prefix: "gcr", Url: "https://gcr.io"})
	second := edge.NextConfig(t)
	edge.Ack(t, second, false, "upstreams[2].url: edge refuses it")
	testkit.WaitFor(t, "NACK recorded", 10*time.Second, func() bool {
		e := listEdges(t, env, "team-a")
		return len(e) == 1 && e[0].GetNackReason() == "upstreams[2].url: edge refuses it" &&
			e[0].GetAckedVersion() == first.GetVersion() && e[0].GetSentVersion() == second.GetVersion()
	})
	// A NACKed version is not resent; the edge keeps its last good config.
	edge.ExpectNothing(t, quiet)
}

func TestStreamStaleAckIgnored(t *testing.T) {
	t.Parallel()
	env := start(t)
	edge := servertest.OpenEdge(t, env.Conn, servertest.EdgeToken("team-a"), servertest.Hello("team-a", "edge-0", ""))
	first := edge.NextConfig(t)
	putUpstream(t, env, &selfhostv1.Upstream{Prefix: "gcr", Url: "https://gcr.io"})
	second := edge.NextConfig(t)

	edge.Ack(t, first, true, "")                                                                  // old nonce: stale
	edge.Ack(t, &selfhostv1.EdgeConfig{Version: second.GetVersion(), Nonce: "bogus"}, false, "x") // unknown nonce
	edge.Ack(t, second, true, "")
	testkit.WaitFor(t, "current ACK recorded", 10*time.Second, func() bool {
		e := listEdges(t, env, "team-a")
		return len(e) == 1 && e[0].GetAckedVersion() == second.GetVersion()
	})
	if e := listEdges(t, env, "team-a"); e[0].GetNackReason() != "" {
		t.Fatalf("stale NACK was recorded: %q", e[0].GetNackReason())
	}
}

func TestStreamRefusals(t *testing.T) {
	t.Parallel()
	env := start(t)
	tests := []struct {
		name    string
		token   string
		first   *selfhostv1.StreamConfigRequest
		code    codes.Code
		message string
	}{
		{"missing token", "", helloReq("team-a", ""), codes.Unauthenticated, "missing bearer token"},
		{"malformed token", "has space", helloReq("team-a", ""), codes.Unauthenticated, "malformed"},
		{"unknown token", "unknown-token-0123456789", helloReq("team-a", ""), codes.Unauthenticated, "unknown token"},
		{"admin token", servertest.AdminToken, helloReq("team-a", ""), codes.PermissionDenied, "admin token cannot open an edge config stream"},
		{"first message not hello", servertest.EdgeToken("team-a"), &selfhostv1.StreamConfigRequest{Kind: &selfhostv1.StreamConfigRequest_Ack{Ack: &selfhostv1.Ack{}}}, codes.InvalidArgument, "first message must be hello"},
		{"empty first message", servertest.EdgeToken("team-a"), &selfhostv1.StreamConfigRequest{}, codes.InvalidArgument, "first message must be hello"},
		{"claims another namespace", servertest.EdgeToken("team-b"), helloReq("team-a", ""), codes.PermissionDenied, `hello.namespace "team-a" does not match the token's namespace`},
		{"bad address", servertest.EdgeToken("team-a"), helloReq("team-a", "http://x/y"), codes.InvalidArgument, "hello.address"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			edge := servertest.OpenEdge(t, env.Conn, tc.token, nil)
			_ = edge.Stream.Send(tc.first) // may fail once the server has refused
			err := edge.Err(t)
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.message) {
				t.Fatalf("err = %v, want %s containing %q", err, tc.code, tc.message)
			}
		})
	}
}

func TestStreamSecondHelloRefused(t *testing.T) {
	t.Parallel()
	env := start(t)
	edge := servertest.OpenEdge(t, env.Conn, servertest.EdgeToken("team-a"), servertest.Hello("team-a", "p", ""))
	edge.NextConfig(t)
	edge.Send(t, helloReq("team-a", ""))
	if err := edge.Err(t); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("err = %v, want InvalidArgument", err)
	}
}

func TestUpstreamChangeReachesItsNamespaces(t *testing.T) {
	t.Parallel()
	env := start(t)
	a := servertest.OpenEdge(t, env.Conn, servertest.EdgeToken("team-a"), servertest.Hello("team-a", "a", ""))
	b := servertest.OpenEdge(t, env.Conn, servertest.EdgeToken("team-b"), servertest.Hello("team-b", "b", ""))
	a1, b1 := a.NextConfig(t), b.NextConfig(t)
	// ghcr: both may use it.
	putUpstream(t, env, &selfhostv1.Upstream{Prefix: "ghcr", Url: "https://ghcr.io", Credentials: &selfhostv1.Credentials{Username: "u", Password: "p"}})
	a2, b2 := a.NextConfig(t), b.NextConfig(t)
	if a2.GetVersion() == a1.GetVersion() || b2.GetVersion() == b1.GetVersion() {
		t.Fatal("versions did not change")
	}
	if a2.GetNonce() == a1.GetNonce() || a2.GetNonce() == b2.GetNonce() {
		t.Fatal("nonces repeat")
	}
	// A new upstream reaches only the namespaces that may use it: team-b
	// (ghcr only) never holds another upstream.
	putUpstream(t, env, &selfhostv1.Upstream{Prefix: "gcr", Url: "https://gcr.io"})
	if a3 := a.NextConfig(t); a3.GetVersion() == a2.GetVersion() {
		t.Fatal("team-a's version did not change")
	}
	b.ExpectNothing(t, quiet)
}

func TestPolicyChangeReachesOnlyItsNamespace(t *testing.T) {
	t.Parallel()
	env := start(t)
	a := servertest.OpenEdge(t, env.Conn, servertest.EdgeToken("team-a"), servertest.Hello("team-a", "a", ""))
	b := servertest.OpenEdge(t, env.Conn, servertest.EdgeToken("team-b"), servertest.Hello("team-b", "b", ""))
	a.NextConfig(t)
	b.NextConfig(t)
	// The admin API has no policy calls yet; change the store directly, as
	// the in-cluster controller will.
	_, err := env.Server.Store().Update(t.Context(), "test policy", func(st *config.State) error {
		st.Namespaces["team-a"].AllowedPrefixes = []string{"dockerhub"}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := a.NextConfig(t).GetPolicy().GetAllowedPrefixes(); !proto.Equal(&selfhostv1.NamespacePolicy{AllowedPrefixes: got}, &selfhostv1.NamespacePolicy{AllowedPrefixes: []string{"dockerhub"}}) {
		t.Fatalf("allowed prefixes %v", got)
	}
	b.ExpectNothing(t, quiet)
}

// TestDebounceCoalescesChanges runs the whole server and an edge in a
// synctest bubble (gRPC over bufconn blocks durably): 20 admin changes
// within one quiet period reach the edge as one push of the final
// version, not a nanosecond before the quiet period ends.
func TestDebounceCoalescesChanges(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const debounce = 2 * time.Second
		// Saves are skipped: this test is about the debouncer, not the disk.
		env := servertest.Start(t, servertest.Options{Debounce: debounce, Server: func(o *grpcserver.Options) {
			o.Source = noSave{o.Source}
		}})
		edge := servertest.OpenEdge(t, env.Conn, servertest.EdgeToken("team-a"), servertest.Hello("team-a", "a", ""))
		edge.NextConfig(t)
		var last *selfhostv1.PutUpstreamResponse
		for i := range 20 {
			last = putUpstream(t, env, &selfhostv1.Upstream{Prefix: "gcr", Url: "https://gcr.io", Hosts: []string{"h" + string(rune('a'+i)) + ".example"}})
		}
		if msgs := edge.Drain(debounce - time.Nanosecond); len(msgs) != 0 {
			t.Fatalf("%d pushes within the quiet period", len(msgs))
		}
		msgs := edge.Drain(time.Minute)
		if len(msgs) != 1 {
			t.Fatalf("20 changes gave %d pushes, want one", len(msgs))
		}
		ns, _ := env.Server.Store().Current().Namespace("team-a")
		if got := msgs[0].GetConfig().GetVersion(); got != ns.Config.GetVersion() {
			t.Fatalf("the push has version %s, want the final %s (global %s)", got, ns.Config.GetVersion(), last.GetConfigVersion())
		}
	})
}

func TestInvalidateTag(t *testing.T) {
	t.Parallel()
	env := start(t)
	a := servertest.OpenEdge(t, env.Conn, servertest.EdgeToken("team-a"), servertest.Hello("team-a", "a", ""))
	b := servertest.OpenEdge(t, env.Conn, servertest.EdgeToken("team-b"), servertest.Hello("team-b", "b", ""))
	a.NextConfig(t)
	b.NextConfig(t)
	resp, err := env.Admin.InvalidateTag(adminCtx(t), &selfhostv1.InvalidateTagRequest{
		Namespace: "team-a", Tag: &selfhostv1.InvalidateTag{Prefix: "quayio", Repository: "x/y", Tag: "latest"},
	})
	if err != nil || resp.GetEdgesNotified() != 1 {
		t.Fatalf("InvalidateTag = %v, %v; want 1 edge", resp, err)
	}
	m, err := a.Next(t, 5*time.Second)
	want := &selfhostv1.InvalidateTag{Prefix: "quay", Repository: "x/y", Tag: "latest"} // alias resolved
	if err != nil || !proto.Equal(m.GetInvalidateTag(), want) {
		t.Fatalf("edge got %v, %v; want %v", m, err, want)
	}
	b.ExpectNothing(t, quiet)
}

func TestCacheStatsSummed(t *testing.T) {
	t.Parallel()
	env := start(t)
	for i, ns := range []string{"team-a", "team-b"} {
		e := servertest.OpenEdge(t, env.Conn, servertest.EdgeToken(ns), servertest.Hello(ns, ns, ""))
		e.NextConfig(t)
		e.Send(t, &selfhostv1.StreamConfigRequest{Kind: &selfhostv1.StreamConfigRequest_Stats{Stats: &selfhostv1.EdgeStats{
			CacheHits: uint64(10 * (i + 1)), CacheMisses: 1, BytesFromCache: 100, BytesFromUpstream: 5, StaleServes: uint64(i),
		}}})
	}
	want := &selfhostv1.GetCacheStatsResponse{Edges: 2, Total: &selfhostv1.EdgeStats{CacheHits: 30, CacheMisses: 2, BytesFromCache: 200, BytesFromUpstream: 10, StaleServes: 1}}
	testkit.WaitFor(t, "stats summed", 10*time.Second, func() bool {
		got, err := env.Admin.GetCacheStats(adminCtx(t), &selfhostv1.GetCacheStatsRequest{})
		return err == nil && proto.Equal(got, want)
	})
	got, err := env.Admin.GetCacheStats(adminCtx(t), &selfhostv1.GetCacheStatsRequest{Namespace: "team-b"})
	if err != nil || got.GetEdges() != 1 || got.GetTotal().GetCacheHits() != 20 {
		t.Fatalf("team-b stats %v, %v", got, err)
	}
}

func TestShutdownEndsStreamsWithUnavailable(t *testing.T) {
	t.Parallel()
	env := start(t)
	edge := servertest.OpenEdge(t, env.Conn, servertest.EdgeToken("team-a"), servertest.Hello("team-a", "a", ""))
	edge.NextConfig(t)
	go env.Stop(t)
	if err := edge.Err(t); status.Code(err) != codes.Unavailable {
		t.Fatalf("err = %v, want Unavailable", err)
	}
}

// helpers

// noSave is a config.Source whose Save does nothing.
type noSave struct{ config.Source }

func (noSave) Save(context.Context, *config.State) error { return nil }

func helloReq(ns, address string) *selfhostv1.StreamConfigRequest {
	return &selfhostv1.StreamConfigRequest{Kind: &selfhostv1.StreamConfigRequest_Hello{Hello: servertest.Hello(ns, "p", address)}}
}

func putUpstream(t *testing.T, env *servertest.Env, u *selfhostv1.Upstream) *selfhostv1.PutUpstreamResponse {
	t.Helper()
	resp, err := env.Admin.PutUpstream(adminCtx(t), &selfhostv1.PutUpstreamRequest{Upstream: u})
	if err != nil {
		t.Fatalf("PutUpstream(%s): %v", u.GetPrefix(), err)
	}
	return resp
}

func listEdges(t *testing.T, env *servertest.Env, ns string) []*selfhostv1.EdgeStatus {
	t.Helper()
	resp, err := env.Admin.ListEdges(adminCtx(t), &selfhostv1.ListEdgesRequest{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetEdges()
}
