package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/auth"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/snapshot"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/rewrite"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

type request = selfhostv1.StreamConfigRequest

// StreamConfig implements selfhostv1.ConfigDiscoveryServiceServer. The
// caller's namespace comes from the Identity the auth interceptor put into
// the context, never from the hello.
func (s *Server) StreamConfig(stream selfhostv1.ConfigDiscoveryService_StreamConfigServer) error {
	ctx := stream.Context()
	id, ok := auth.FromContext(ctx)
	if !ok || id.Kind != auth.KindEdge {
		return status.Error(codes.PermissionDenied, "an edge token is required")
	}
	// Recv blocks, so it runs in its own goroutine and hands requests to the
	// loop, which can then wait for requests and wake-ups at once. It ends
	// when the stream does (the handler's return cancels ctx).
	reqs := make(chan *request)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()

	hello, err := s.awaitHello(ctx, reqs, recvErr)
	if err != nil {
		return err
	}
	if err := checkHello(hello, id.Namespace); err != nil {
		return err
	}
	if _, ok := s.current.Load().Namespace(id.Namespace); !ok {
		return status.Errorf(codes.FailedPrecondition, "namespace %q has no configuration", id.Namespace)
	}
	c := &conn{
		id:          s.connIDs.Add(1),
		ns:          id.Namespace,
		pod:         hello.GetPod(),
		address:     hello.GetAddress(),
		edgeVersion: hello.GetEdgeVersion(),
		since:       time.Now(),
		wake:        make(chan struct{}, 1),
	}
	// Registered before the first send: a publish in between then wakes
	// the loop instead of being missed.
	s.register(c)
	defer s.unregister(c)
	log := s.log.With("namespace", c.ns, "pod", c.pod)
	log.Info("edge connected", "edge_version", c.edgeVersion, "address", c.address, "last_applied_version", hello.GetLastAppliedVersion())
	if c.address != "" && !pullable(c.address) {
		log.Warn("the edge reported a wildcard address; image rewrites use the configured edgeAddress (set the edge's --advertise-address)", "address", c.address)
	}
	err = s.loop(ctx, stream, c, reqs, recvErr)
	reason := "the edge closed the stream"
	if err != nil {
		reason = status.Convert(err).Message()
	}
	log.Info("edge disconnected", "reason", reason)
	return err
}

func (s *Server) awaitHello(ctx context.Context, reqs <-chan *request, recvErr <-chan error) (*selfhostv1.Hello, error) {
	timer := time.NewTimer(s.opts.helloTimeout)
	defer timer.Stop()
	select {
	case req := <-reqs:
		if h := req.GetHello(); h != nil {
			return h, nil
		}
		return nil, status.Error(codes.InvalidArgument, "first message must be hello")
	case err := <-recvErr:
		if errors.Is(err, io.EOF) {
			return nil, status.Error(codes.InvalidArgument, "stream closed before hello")
		}
		return nil, err
	case <-timer.C:
		return nil, status.Errorf(codes.DeadlineExceeded, "no hello within %s", s.opts.helloTimeout)
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	case <-s.done:
		return nil, errShutdown
	}
}

var errShutdown = status.Error(codes.Unavailable, "control plane is shutting down; reconnect")

// Bounds on what an edge can make the control plane keep.
const (
	maxPodLength     = 253
	maxVersionLength = 128
)

func checkHello(h *selfhostv1.Hello, tokenNamespace string) error {
	if h.GetNamespace() != "" && h.GetNamespace() != tokenNamespace {
		return status.Errorf(codes.PermissionDenied, "hello.namespace %q does not match the token's namespace", h.GetNamespace())
	}
	switch {
	case len(h.GetPod()) > maxPodLength:
		return status.Errorf(codes.InvalidArgument, "hello.pod: longer than %d characters", maxPodLength)
	case len(h.GetEdgeVersion()) > maxVersionLength:
		return status.Errorf(codes.InvalidArgument, "hello.edge_version: longer than %d characters", maxVersionLength)
	case len(h.GetLastAppliedVersion()) > maxVersionLength:
		return status.Errorf(codes.InvalidArgument, "hello.last_applied_version: longer than %d characters", maxVersionLength)
	}
	if h.GetAddress() != "" {
		// The address ends up in rewritten image references; refuse one that
		// could not be a registry host.
		if err := rewrite.ValidateEdgeAddress(h.GetAddress()); err != nil {
			return status.Errorf(codes.InvalidArgument, "hello.address %q: want host:port as written in image references", clip(h.GetAddress()))
		}
	}
	return nil
}

// loop is the connection's only sender. It sends the current snapshot
// first, then serves requests (first) and wake-ups until the stream ends.
func (s *Server) loop(ctx context.Context, stream selfhostv1.ConfigDiscoveryService_StreamConfigServer, c *conn, reqs <-chan *request, recvErr <-chan error) error {
	if err := s.flush(stream, c); err != nil {
		return err
	}
	for {
		// Requests before pushes: an ACK that is already here is recorded
		// before the next snapshot (and nonce) goes out.
		select {
		case req := <-reqs:
			if err := s.handle(c, req); err != nil {
				return err
			}
			continue
		default:
		}
		select {
		case req := <-reqs:
			if err := s.handle(c, req); err != nil {
				return err
			}
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil // the edge closed its side: a clean end
			}
			return err
		case <-c.wake:
			if err := s.flush(stream, c); err != nil {
				return err
			}
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.done:
			return errShutdown
		}
	}
}

// flush sends the namespace's current snapshot unless the edge already has
// that version (a NACKed version is not resent; the next change is), then
// any queued invalidations.
func (s *Server) flush(stream selfhostv1.ConfigDiscoveryService_StreamConfigServer, c *conn) error {
	ns, ok := s.current.Load().Namespace(c.ns)
	if !ok {
		return status.Errorf(codes.FailedPrecondition, "namespace %q is no longer configured", c.ns)
	}
	if sentVersion, _ := c.sent(); ns.Config.GetVersion() != sentVersion {
		nonce := s.newNonce()
		cfg := snapshot.WithNonce(ns.Config, nonce)
		if err := stream.Send(&selfhostv1.StreamConfigResponse{Kind: &selfhostv1.StreamConfigResponse_Config{Config: cfg}}); err != nil {
			return err
		}
		// Recorded after Send: ACKs are read by this same goroutine, so none
		// can be handled before this line.
		c.recordSent(cfg.GetVersion(), nonce)
		s.configsSent.Add(1)
		s.opts.observer.ConfigSent(c.ns)
	}
	for _, t := range c.takeInvalidations() {
		if err := stream.Send(&selfhostv1.StreamConfigResponse{Kind: &selfhostv1.StreamConfigResponse_InvalidateTag{InvalidateTag: t}}); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) handle(c *conn, req *request) error {
	switch k := req.GetKind().(type) {
	case *selfhostv1.StreamConfigRequest_Ack:
		switch c.recordAck(k.Ack) {
		case ackStale:
			s.log.Debug("stale ack ignored", "namespace", c.ns, "pod", c.pod, "nonce", k.Ack.GetNonce())
		case ackMismatch:
			s.log.Warn("ack version does not match the version sent with its nonce; ignored", "namespace", c.ns, "pod", c.pod, "version", k.Ack.GetVersion())
		case ackAccepted:
			s.opts.observer.ConfigAnswered(c.ns, true, "")
			s.log.Debug("edge applied configuration", "namespace", c.ns, "pod", c.pod, "version", k.Ack.GetVersion())
		case ackRejected:
			s.opts.observer.ConfigAnswered(c.ns, false, k.Ack.GetErrorDetail())
			s.log.Warn("edge rejected configuration (NACK)", "namespace", c.ns, "pod", c.pod, "version", k.Ack.GetVersion(), "reason", clip(k.Ack.GetErrorDetail()))
		}
	case *selfhostv1.StreamConfigRequest_Stats:
		c.recordStats(k.Stats)
	case *selfhostv1.StreamConfigRequest_ProxyFailure:
		if s.opts.proxyFailures == nil {
			s.log.Debug("proxy failure report while Clash is disabled; ignored", "namespace", c.ns, "pod", c.pod, "node", clip(k.ProxyFailure.GetNode()))
			return nil
		}
		s.opts.proxyFailures.ReportProxyFailure(c.ns, c.pod, k.ProxyFailure)
	case *selfhostv1.StreamConfigRequest_Hello:
		return status.Error(codes.InvalidArgument, "hello may only be sent once per stream")
	default:
		return status.Error(codes.InvalidArgument, "empty request: set hello, ack, stats or proxy_failure")
	}
	return nil
}

func clip(s string) string {
	if len(s) > 200 {
		return fmt.Sprintf("%s… (%d bytes)", strings.ToValidUTF8(s[:200], ""), len(s))
	}
	return s
}
