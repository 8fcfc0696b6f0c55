package e2e

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// unparsableHost is an upstream URL the control plane's validation
// (configspec) accepts but a real edge cannot build a client for: the
// escaped '%' decodes into a host go-containerregistry refuses ("registries
// must be valid RFC 3986 URI authorities"). It is the one natural way found
// for a real edge to NACK a snapshot the control plane accepted.
const unparsableHost = "http://a%25b.example"

// TestControlPlaneNACKRealEdge: a snapshot the real edges reject. Both keep
// serving on their last good configuration, ListEdges shows the NACK
// reason, and undoing the change clears it.
//
// The control plane is documented to refuse at the admin API anything an
// edge would NACK (docs/control-protocol.md, "5. Pushes"), so this URL getting through
// is a validation gap. Once the control plane refuses it, the test checks
// that refusal instead; TestControlPlaneNACKScriptedEdge keeps covering the
// NACK path either way.
func TestControlPlaneNACKRealEdge(t *testing.T) {
	t.Parallel()
	e := newCPEnv(t)
	edges := map[string]*harness.Edge{"team-a": e.startEdge(t, "team-a", "team-a"), "team-b": e.startEdge(t, "team-b", "team-b")}
	good := map[string]string{}
	for ns, edge := range edges {
		good[ns] = e.waitSynced(t, edge, ns)
	}

	r := e.admin(t, "PutUpstream", fmt.Sprintf(`{"upstream":{"prefix":"weird","url":%q}}`, unparsableHost))
	if r.Err != nil {
		t.Logf("the control plane now refuses %s (the gap is closed): %s: %s", unparsableHost, r.Code, r.Message)
		wantGRPCStatus(t, r, "InvalidArgument", "upstream.url")
		for ns, edge := range edges {
			if got := edge.Readiness(t); got.ConfigVersion != good[ns] || got.LastNACK != "" {
				t.Errorf("%s edge after a refused change: /readyz %+v, want %s without NACK", ns, got, good[ns])
			}
		}
		return
	}

	t.Run("NACK shown in ListEdges", func(t *testing.T) {
		listed := e.waitEdges(t, "both edges NACKed the weird upstream", func(s []*selfhostv1.EdgeStatus) bool {
			for _, edge := range edges {
				if st := listedEdge(s, edge.Addr); st == nil || st.GetNackReason() == "" {
					return false
				}
			}
			return true
		})
		for ns, edge := range edges {
			st := listedEdge(listed, edge.Addr)
			if !strings.Contains(st.GetNackReason(), "upstreams[") || !strings.Contains(st.GetNackReason(), "RFC 3986") {
				t.Errorf("%s: NACK reason %q does not name the upstream field and the cause", ns, st.GetNackReason())
			}
			if st.GetAckedVersion() != good[ns] || st.GetSentVersion() == good[ns] {
				t.Errorf("%s: acked %s sent %s; want the old %s acked and the new one sent", ns, st.GetAckedVersion(), st.GetSentVersion(), good[ns])
			}
		}
	})

	t.Run("edges keep serving the last good configuration", func(t *testing.T) {
		for ns, edge := range edges {
			rd := edge.Readiness(t)
			if rd.ConfigVersion != good[ns] || !strings.Contains(rd.LastNACK, "RFC 3986") || rd.ControlPlane != "connected" {
				t.Errorf("%s /readyz %+v, want version %s, connected, and the NACK", ns, rd, good[ns])
			}
			got, err := harness.CraneEnv(t, e.craneEnv(t, edge, ns), "manifest", e.img.Ref(edge.Addr, prefix))
			if err != nil || !bytes.Equal(got, e.img.Manifest) {
				t.Errorf("%s: pull after the NACK: %v", ns, err)
			}
		}
	})

	t.Run("undoing the change clears the NACK", func(t *testing.T) {
		e.mustAdmin(t, "DeleteUpstream", `{"prefix":"weird"}`, nil)
		e.waitEdges(t, "NACKs cleared and the original versions acked", func(s []*selfhostv1.EdgeStatus) bool {
			for ns, edge := range edges {
				if st := listedEdge(s, edge.Addr); st == nil || st.GetNackReason() != "" || st.GetAckedVersion() != good[ns] {
					return false
				}
			}
			return true
		})
	})
}

// TestControlPlaneNACKScriptedEdge drives the real control plane with a Go
// client that speaks the protocol and NACKs on purpose: ListEdges (grpcurl)
// shows the reason and the last accepted version, the NACKed version is not
// resent, the real edge of the other namespace applies the same change and
// keeps serving, and a later ACK clears the reason.
func TestControlPlaneNACKScriptedEdge(t *testing.T) {
	t.Parallel()
	e := newCPEnv(t)
	realB := e.startEdge(t, "team-b", "team-b")
	e.waitSynced(t, realB, "team-b")

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	conn, err := grpc.NewClient(e.cp.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+e.edgeTokens["team-a"])
	st, err := selfhostv1.NewConfigDiscoveryServiceClient(conn).StreamConfig(ctx)
	if err != nil {
		t.Fatalf("open StreamConfig: %v", err)
	}
	const scriptedAddr = "127.0.0.1:1"
	send := func(m *selfhostv1.StreamConfigRequest) {
		t.Helper()
		if err := st.Send(m); err != nil {
			t.Fatalf("send %v: %v", m, err)
		}
	}
	// Receives run in one goroutine, so that "nothing arrives" can be a
	// timeout.
	recv := make(chan *selfhostv1.StreamConfigResponse, 8)
	go func() {
		defer close(recv)
		for {
			m, err := st.Recv()
			if err != nil {
				return
			}
			recv <- m
		}
	}()
	nextConfig := func(what string) *selfhostv1.EdgeConfig {
		t.Helper()
		select {
		case m, ok := <-recv:
			if !ok || m.GetConfig() == nil {
				t.Fatalf("%s: got %v (stream open: %v), want a config", what, m, ok)
			}
			return m.GetConfig()
		case <-time.After(syncTimeout):
			t.Fatalf("%s: no config within %v", what, syncTimeout)
		}
		return nil
	}
	ack := func(c *selfhostv1.EdgeConfig, detail string) {
		t.Helper()
		send(&selfhostv1.StreamConfigRequest{Kind: &selfhostv1.StreamConfigRequest_Ack{Ack: &selfhostv1.Ack{
			Version: c.GetVersion(), Nonce: c.GetNonce(), Accepted: detail == "", ErrorDetail: detail}}})
	}

	send(&selfhostv1.StreamConfigRequest{Kind: &selfhostv1.StreamConfigRequest_Hello{Hello: &selfhostv1.Hello{
		Namespace: "team-a", Pod: "scripted-nack", EdgeVersion: "e2e", Address: scriptedAddr}}})
	v1 := nextConfig("first snapshot")
	if v1.GetNamespace() != "team-a" || v1.GetPolicy().GetPullToken() != e.pullTokens["team-a"] {
		t.Errorf("first snapshot: namespace %q, pull token sent: %v; want team-a's with its pull token", v1.GetNamespace(), v1.GetPolicy().GetPullToken() != "")
	}
	ack(v1, "")

	e.mustAdmin(t, "PutUpstream", `{"upstream":{"prefix":"test3","url":"http://127.0.0.1:9"}}`, nil)
	v2 := nextConfig("snapshot after PutUpstream test3")
	const reason = "upstreams[3].url: the scripted edge refuses this snapshot"
	ack(v2, reason)

	t.Run("ListEdges shows the NACK", func(t *testing.T) {
		listed := e.waitEdges(t, "the scripted edge's NACK", func(s []*selfhostv1.EdgeStatus) bool {
			return listedEdge(s, scriptedAddr).GetNackReason() != ""
		})
		s := listedEdge(listed, scriptedAddr)
		if s.GetNackReason() != reason || s.GetAckedVersion() != v1.GetVersion() || s.GetSentVersion() != v2.GetVersion() || s.GetPod() != "scripted-nack" {
			t.Errorf("ListEdges shows %v; want NACK %q, acked %s, sent %s", s, reason, v1.GetVersion(), v2.GetVersion())
		}
	})

	t.Run("NACKed version not resent", func(t *testing.T) {
		select {
		case m := <-recv:
			t.Errorf("got %v after the NACK, want nothing until the next change", m)
		case <-time.After(time.Second):
		}
	})

	t.Run("other namespace's real edge applies the change and serves", func(t *testing.T) {
		v := e.waitSynced(t, realB, "team-b")
		if s := listedEdge(e.listEdges(t), realB.Addr); s == nil || s.GetAckedVersion() != v || s.GetNackReason() != "" {
			t.Errorf("edge B in ListEdges: %v, want acked %s without NACK", s, v)
		}
		got, err := harness.CraneEnv(t, e.craneEnv(t, realB, "team-b"), "manifest", e.img.Ref(realB.Addr, prefix))
		if err != nil || !bytes.Equal(got, e.img.Manifest) {
			t.Errorf("pull through edge B: %v", err)
		}
	})

	t.Run("a later ACK clears the NACK", func(t *testing.T) {
		e.mustAdmin(t, "DeleteUpstream", `{"prefix":"test3"}`, nil)
		v3 := nextConfig("snapshot after DeleteUpstream test3")
		if v3.GetVersion() != v1.GetVersion() {
			t.Errorf("version after undoing the change %s, want the first %s (versions are content hashes)", v3.GetVersion(), v1.GetVersion())
		}
		ack(v3, "")
		e.waitEdges(t, "the NACK cleared", func(s []*selfhostv1.EdgeStatus) bool {
			st := listedEdge(s, scriptedAddr)
			return st != nil && st.GetNackReason() == "" && st.GetAckedVersion() == v3.GetVersion()
		})
	})
	// Close the send side: the server ends the stream cleanly.
	if err := st.CloseSend(); err != nil {
		t.Errorf("close send: %v", err)
	}
}
