// Package controltest is an in-process fake of the control plane's
// ConfigDiscoveryService for the edge's tests: it records hellos, tokens,
// ACKs and stats, pushes snapshots and tag invalidations on demand, and can
// refuse or break streams. The real control plane is tested end to end in
// test/e2e.
package controltest

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// Hello is a hello as the fake received it, with the stream's bearer token.
type Hello struct {
	Msg   *selfhostv1.Hello
	Token string // "" when the stream carried no authorization
}

// Server is the fake control plane.
type Server struct {
	selfhostv1.UnimplementedConfigDiscoveryServiceServer

	// Hellos, Acks, Stats and ProxyFailures receive what edges send
	// (buffered; tests read them with Next).
	Hellos        chan Hello
	Acks          chan *selfhostv1.Ack
	Stats         chan *selfhostv1.EdgeStats
	ProxyFailures chan *selfhostv1.ProxyFailure

	// Streams counts every stream opened, accepted or not.
	Streams atomic.Int64
	// ForeignNonces counts ACKs whose nonce was never sent on their stream:
	// an edge must echo the nonce of the snapshot it answers.
	ForeignNonces atomic.Int64

	grpc *grpc.Server
	lis  net.Listener

	mu      sync.Mutex
	cfg     *selfhostv1.EdgeConfig
	nonce   int
	reject  error // ends every new stream after its hello
	tokens  map[string]bool
	streams map[*conn]bool
}

type conn struct {
	out    chan *selfhostv1.StreamConfigResponse
	done   chan error
	nonces sync.Map // sent on this stream
}

// Start serves the fake on lis (a bufconn listener or a loopback TCP one)
// until the test ends. register adds further services to its gRPC server
// before it serves (the storage broker's fake, brokertest).
func Start(t testing.TB, lis net.Listener, register ...func(*grpc.Server)) *Server {
	t.Helper()
	s := &Server{
		Hellos: make(chan Hello, 256), Acks: make(chan *selfhostv1.Ack, 256), Stats: make(chan *selfhostv1.EdgeStats, 1024),
		ProxyFailures: make(chan *selfhostv1.ProxyFailure, 1024),
		grpc:          grpc.NewServer(), lis: lis, streams: map[*conn]bool{},
	}
	selfhostv1.RegisterConfigDiscoveryServiceServer(s.grpc, s)
	for _, r := range register {
		r(s.grpc)
	}
	go func() { _ = s.grpc.Serve(lis) }()
	t.Cleanup(s.Stop)
	return s
}

// StartBufconn serves the fake on an in-memory listener; Dial connects to it.
func StartBufconn(t testing.TB) (*Server, grpc.DialOption) {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	s := Start(t, lis)
	dial := grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) })
	return s, dial
}

// BufconnTarget is the target to use with StartBufconn's dial option.
const BufconnTarget = "passthrough:///bufconn"

// Insecure is the transport credential for the fake.
func Insecure() grpc.DialOption { return grpc.WithTransportCredentials(insecure.NewCredentials()) }

// Stop ends every stream and closes the listener.
func (s *Server) Stop() { s.grpc.Stop() }

// RequireTokens makes streams whose bearer token is not in tokens fail with
// Unauthenticated; no arguments accepts any stream again.
func (s *Server) RequireTokens(tokens ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = nil
	if len(tokens) > 0 {
		s.tokens = map[string]bool{}
		for _, t := range tokens {
			s.tokens[t] = true
		}
	}
}

// RejectStreams ends every new stream with err right after its hello; nil
// accepts streams again.
func (s *Server) RejectStreams(err error) {
	s.mu.Lock()
	s.reject = err
	s.mu.Unlock()
}

// SetConfig makes cfg the current snapshot and pushes it, with a fresh
// nonce, to every connected edge. It returns the nonce.
func (s *Server) SetConfig(cfg *selfhostv1.EdgeConfig) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg = proto.Clone(cfg).(*selfhostv1.EdgeConfig)
	var nonce string
	for c := range s.streams {
		nonce = s.pushLocked(c)
	}
	if nonce == "" {
		nonce = s.nextNonceLocked()
	}
	return nonce
}

func (s *Server) nextNonceLocked() string {
	s.nonce++
	return fmt.Sprintf("n%d", s.nonce)
}

func (s *Server) pushLocked(c *conn) string {
	msg := proto.Clone(s.cfg).(*selfhostv1.EdgeConfig)
	msg.Nonce = s.nextNonceLocked()
	c.nonces.Store(msg.Nonce, true)
	c.out <- &selfhostv1.StreamConfigResponse{Kind: &selfhostv1.StreamConfigResponse_Config{Config: msg}}
	return msg.Nonce
}

// InvalidateTag sends an invalidation to every connected edge.
func (s *Server) InvalidateTag(prefix, repository, tag string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.streams {
		c.out <- &selfhostv1.StreamConfigResponse{Kind: &selfhostv1.StreamConfigResponse_InvalidateTag{
			InvalidateTag: &selfhostv1.InvalidateTag{Prefix: prefix, Repository: repository, Tag: tag}}}
	}
}

// BreakStreams ends every connected stream with Unavailable.
func (s *Server) BreakStreams() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.streams {
		select {
		case c.done <- status.Error(codes.Unavailable, "stream broken by the test"):
		default:
		}
	}
}

// Connected is the number of streams currently accepted.
func (s *Server) Connected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.streams)
}

// StreamConfig implements the service.
func (s *Server) StreamConfig(st grpc.BidiStreamingServer[selfhostv1.StreamConfigRequest, selfhostv1.StreamConfigResponse]) error {
	s.Streams.Add(1)
	token := ""
	if md, ok := metadata.FromIncomingContext(st.Context()); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			token = strings.TrimPrefix(v[0], "Bearer ")
		}
	}
	first, err := st.Recv()
	if err != nil {
		return err
	}
	if first.GetHello() == nil {
		return status.Error(codes.InvalidArgument, "first message must be hello")
	}
	s.Hellos <- Hello{Msg: first.GetHello(), Token: token}

	s.mu.Lock()
	if s.tokens != nil && !s.tokens[token] {
		s.mu.Unlock()
		return status.Error(codes.Unauthenticated, "token not accepted")
	}
	if s.reject != nil {
		err := s.reject
		s.mu.Unlock()
		return err
	}
	c := &conn{out: make(chan *selfhostv1.StreamConfigResponse, 64), done: make(chan error, 1)}
	s.streams[c] = true
	if s.cfg != nil {
		s.pushLocked(c)
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.streams, c)
		s.mu.Unlock()
	}()

	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			switch k := m.GetKind().(type) {
			case *selfhostv1.StreamConfigRequest_Ack:
				if _, ok := c.nonces.Load(k.Ack.GetNonce()); !ok {
					s.ForeignNonces.Add(1)
				}
				s.Acks <- k.Ack
			case *selfhostv1.StreamConfigRequest_Stats:
				select {
				case s.Stats <- k.Stats:
				default: // tests that ignore stats must not block the stream
				}
			case *selfhostv1.StreamConfigRequest_ProxyFailure:
				select {
				case s.ProxyFailures <- k.ProxyFailure:
				default:
				}
			}
		}
	}()
	for {
		select {
		case m := <-c.out:
			if err := st.Send(m); err != nil {
				return err
			}
		case err := <-c.done:
			return err
		case err := <-recvErr:
			return err
		}
	}
}

// Next returns the next value from ch or fails the test after timeout.
func Next[T any](t testing.TB, ch <-chan T, timeout time.Duration) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(timeout):
		var zero T
		t.Fatalf("timed out after %s waiting for %T", timeout, zero)
		return zero
	}
}
