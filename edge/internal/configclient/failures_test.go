package configclient_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/configclient"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/configclient/controltest"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// TestProxyFailureReported: a report queued before the stream is up is
// sent once it is, and later ones follow on the live stream.
func TestProxyFailureReported(t *testing.T) {
	t.Parallel()
	srv, dial := controltest.StartBufconn(t)
	h := newClient(t, dial, nil, configclient.WithStatsInterval(0))
	early := &selfhostv1.ProxyFailure{Node: "hk-1", Prefix: "dockerhub", Error: "connection refused"}
	if !h.client.ReportProxyFailure(early) {
		t.Fatal("report refused with an empty queue")
	}
	h.run(t)
	if got := controltest.Next(t, srv.ProxyFailures, wait); !proto.Equal(got, early) {
		t.Fatalf("got %v, want %v", got, early)
	}
	late := &selfhostv1.ProxyFailure{Node: "jp-2", Prefix: "ghcr", Error: "EOF"}
	h.client.ReportProxyFailure(late)
	if got := controltest.Next(t, srv.ProxyFailures, wait); !proto.Equal(got, late) {
		t.Fatalf("got %v, want %v", got, late)
	}
}

// TestProxyFailureNeverBlocks: with no stream, reports beyond the queue
// are dropped at once.
func TestProxyFailureNeverBlocks(t *testing.T) {
	t.Parallel()
	_, dial := controltest.StartBufconn(t)
	h := newClient(t, dial, nil)
	accepted := 0
	for range 1000 {
		if h.client.ReportProxyFailure(&selfhostv1.ProxyFailure{Node: "n"}) {
			accepted++
		}
	}
	if accepted == 0 || accepted == 1000 {
		t.Fatalf("accepted %d of 1000 reports, want a bounded queue", accepted)
	}
}
