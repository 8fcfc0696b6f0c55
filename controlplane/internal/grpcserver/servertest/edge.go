package servertest

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// Edge is a scripted edge: it opens the config stream, and a goroutine
// collects what the control plane sends.
type Edge struct {
	Stream selfhostv1.ConfigDiscoveryService_StreamConfigClient
	msgs   chan *selfhostv1.StreamConfigResponse
	errc   chan error
	cancel context.CancelFunc
}

// OpenEdge opens a stream with token (none when empty) and sends hello
// (none when nil). Failures surface on Next.
func OpenEdge(t testing.TB, conn *grpc.ClientConn, token string, hello *selfhostv1.Hello) *Edge {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if token != "" {
		ctx = WithToken(ctx, token)
	}
	stream, err := selfhostv1.NewConfigDiscoveryServiceClient(conn).StreamConfig(ctx)
	if err != nil {
		cancel()
		t.Fatalf("StreamConfig: %v", err)
	}
	e := &Edge{Stream: stream, msgs: make(chan *selfhostv1.StreamConfigResponse, 1024), errc: make(chan error, 1), cancel: cancel}
	t.Cleanup(cancel)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				e.errc <- err
				return
			}
			e.msgs <- m
		}
	}()
	if hello != nil {
		e.Send(t, &selfhostv1.StreamConfigRequest{Kind: &selfhostv1.StreamConfigRequest_Hello{Hello: hello}})
	}
	return e
}

// Close ends the stream.
func (e *Edge) Close() { e.cancel() }

// Send sends one request.
func (e *Edge) Send(t testing.TB, req *selfhostv1.StreamConfigRequest) {
	t.Helper()
	if err := e.Stream.Send(req); err != nil {
		t.Fatalf("send %v: %v", req, err)
	}
}

// Ack answers cfg.
func (e *Edge) Ack(t testing.TB, cfg *selfhostv1.EdgeConfig, accepted bool, detail string) {
	t.Helper()
	e.Send(t, &selfhostv1.StreamConfigRequest{Kind: &selfhostv1.StreamConfigRequest_Ack{Ack: &selfhostv1.Ack{
		Version: cfg.GetVersion(), Nonce: cfg.GetNonce(), Accepted: accepted, ErrorDetail: detail,
	}}})
}

// Next returns the next message, or the stream's error; it fails the test
// after timeout.
func (e *Edge) Next(t testing.TB, timeout time.Duration) (*selfhostv1.StreamConfigResponse, error) {
	t.Helper()
	select {
	case m := <-e.msgs:
		return m, nil
	case err := <-e.errc:
		return nil, err
	case <-time.After(timeout):
		t.Fatalf("nothing received within %s", timeout)
		return nil, nil
	}
}

// NextConfig returns the next message, which must be an EdgeConfig.
func (e *Edge) NextConfig(t testing.TB) *selfhostv1.EdgeConfig {
	t.Helper()
	m, err := e.Next(t, 5*time.Second)
	if err != nil {
		t.Fatalf("stream ended: %v", err)
	}
	if m.GetConfig() == nil {
		t.Fatalf("got %v, want a config", m)
	}
	return m.GetConfig()
}

// Err waits for the stream to fail and returns the error.
func (e *Edge) Err(t testing.TB) error {
	t.Helper()
	for {
		// Messages before the failure do not matter here.
		if _, err := e.Next(t, 5*time.Second); err != nil {
			return err
		}
	}
}

// ExpectNothing fails the test if anything arrives within d.
func (e *Edge) ExpectNothing(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case m := <-e.msgs:
		t.Fatalf("unexpected message: %v", m)
	case err := <-e.errc:
		t.Fatalf("stream ended: %v", err)
	case <-time.After(d):
	}
}

// Drain returns every message that arrives within d.
func (e *Edge) Drain(d time.Duration) []*selfhostv1.StreamConfigResponse {
	var out []*selfhostv1.StreamConfigResponse
	deadline := time.After(d)
	for {
		select {
		case m := <-e.msgs:
			out = append(out, m)
		case <-deadline:
			return out
		}
	}
}

// Hello builds a hello for namespace ns.
func Hello(ns, pod, address string) *selfhostv1.Hello {
	return &selfhostv1.Hello{Namespace: ns, Pod: pod, EdgeVersion: "test", Address: address}
}
