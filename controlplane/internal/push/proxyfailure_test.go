package push_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/push"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

type failureRecorder struct {
	mu  sync.Mutex
	got []string
}

func (r *failureRecorder) ReportProxyFailure(ns, pod string, f *selfhostv1.ProxyFailure) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, ns+"/"+pod+":"+f.GetNode()+":"+f.GetPrefix()+":"+f.GetError())
}

func (r *failureRecorder) reports() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

func failure(node string) *selfhostv1.StreamConfigRequest {
	return &selfhostv1.StreamConfigRequest{Kind: &selfhostv1.StreamConfigRequest_ProxyFailure{ProxyFailure: &selfhostv1.ProxyFailure{Node: node, Prefix: "dockerhub", Error: "EOF"}}}
}

// TestProxyFailureForwarded: reports reach the handler with the token's
// namespace and the hello's pod, and the stream goes on.
func TestProxyFailureForwarded(t *testing.T) {
	t.Parallel()
	rec := &failureRecorder{}
	h := newHarness(t, build(t, state(0)), push.WithProxyFailures(rec))
	s := h.open(t, "team-a")
	next(t, collect(s))
	if err := s.Send(failure("hk-1")); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "a report", 5*time.Second, func() bool { return len(rec.reports()) > 0 })
	if got := rec.reports(); len(got) != 1 || got[0] != "team-a/team-a:hk-1:dockerhub:EOF" {
		t.Fatalf("reports %v", got)
	}
	if edges := h.srv.Edges("team-a"); len(edges) != 1 {
		t.Fatalf("the stream ended after a report: %v", edges)
	}
}

// TestProxyFailureWithoutHandler: with Clash disabled a report is dropped,
// not a protocol violation.
func TestProxyFailureWithoutHandler(t *testing.T) {
	t.Parallel()
	h := newHarness(t, build(t, state(0)))
	s := h.open(t, "team-a")
	cfg := next(t, collect(s))
	for range 3 {
		if err := s.Send(failure("x")); err != nil {
			t.Fatal(err)
		}
	}
	// An ACK after the reports: once it is recorded, the server has read
	// past them on the same stream.
	ack := &selfhostv1.Ack{Version: cfg.GetVersion(), Nonce: cfg.GetNonce(), Accepted: true}
	if err := s.Send(&selfhostv1.StreamConfigRequest{Kind: &selfhostv1.StreamConfigRequest_Ack{Ack: ack}}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the ACK after the reports", 5*time.Second, func() error {
		if edges := h.srv.Edges("team-a"); len(edges) != 1 || edges[0].GetAckedVersion() != cfg.GetVersion() {
			return fmt.Errorf("edges %v", edges)
		}
		return nil
	})
}
