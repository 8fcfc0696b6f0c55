package e2e

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// fakeCP is a minimal ConfigDiscoveryService for the proxy tests: it pushes
// the snapshot set last to every stream and records ACKs and ProxyFailure
// reports. It serves on a TCP address the edge's namespace can reach.
type fakeCP struct {
	selfhostv1.UnimplementedConfigDiscoveryServiceServer

	Addr     string
	Acks     chan *selfhostv1.Ack
	Failures chan *selfhostv1.ProxyFailure

	mu      sync.Mutex
	cfg     *selfhostv1.EdgeConfig
	nonce   int
	streams map[chan *selfhostv1.EdgeConfig]bool
}

func startFakeCP(t *testing.T, host string) *fakeCP {
	t.Helper()
	lis, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeCP{Addr: lis.Addr().String(), Acks: make(chan *selfhostv1.Ack, 64),
		Failures: make(chan *selfhostv1.ProxyFailure, 1024), streams: map[chan *selfhostv1.EdgeConfig]bool{}}
	srv := grpc.NewServer()
	selfhostv1.RegisterConfigDiscoveryServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return f
}

// SetConfig makes cfg current and pushes it to every stream.
func (f *fakeCP) SetConfig(cfg *selfhostv1.EdgeConfig) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cfg = cfg
	for ch := range f.streams {
		ch <- f.stampLocked()
	}
}

func (f *fakeCP) stampLocked() *selfhostv1.EdgeConfig {
	f.nonce++
	c := proto.Clone(f.cfg).(*selfhostv1.EdgeConfig)
	c.Nonce = fmt.Sprintf("n%d", f.nonce)
	return c
}

// StreamConfig implements the service.
func (f *fakeCP) StreamConfig(st grpc.BidiStreamingServer[selfhostv1.StreamConfigRequest, selfhostv1.StreamConfigResponse]) error {
	if _, err := st.Recv(); err != nil { // hello
		return err
	}
	out := make(chan *selfhostv1.EdgeConfig, 16)
	f.mu.Lock()
	f.streams[out] = true
	if f.cfg != nil {
		out <- f.stampLocked()
	}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.streams, out)
		f.mu.Unlock()
	}()
	errc := make(chan error, 1)
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				errc <- err
				return
			}
			switch k := m.GetKind().(type) {
			case *selfhostv1.StreamConfigRequest_Ack:
				f.Acks <- k.Ack
			case *selfhostv1.StreamConfigRequest_ProxyFailure:
				select {
				case f.Failures <- k.ProxyFailure:
				default:
				}
			}
		}
	}()
	for {
		select {
		case c := <-out:
			if err := st.Send(&selfhostv1.StreamConfigResponse{Kind: &selfhostv1.StreamConfigResponse_Config{Config: c}}); err != nil {
				return err
			}
		case err := <-errc:
			return err
		}
	}
}

// next returns the next value of ch or fails the test.
func next[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(proxyWait):
		var zero T
		t.Fatalf("timed out after %v waiting for %T", proxyWait, zero)
		return zero
	}
}
