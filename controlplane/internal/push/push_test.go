package push_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/auth"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/push"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/snapshot"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/configspec"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// state returns a State with namespaces team-a and team-b and extra
// upstreams, so that tests can make sets of any size.
func state(extraUpstreams int, allowedA ...string) *config.State {
	st := &config.State{
		Upstreams: configspec.DefaultUpstreams(),
		Namespaces: map[string]*config.Namespace{
			"team-a": {AllowedPrefixes: allowedA},
			"team-b": {},
		},
	}
	for i := range extraUpstreams {
		st.Upstreams = append(st.Upstreams, &selfhostv1.Upstream{Prefix: fmt.Sprintf("extra%03d", i), Url: fmt.Sprintf("https://registry-%03d.example.com", i)})
	}
	return st
}

func build(t testing.TB, st *config.State) *snapshot.Set {
	t.Helper()
	set, err := snapshot.Builder{}.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// harness serves a push.Server over bufconn. The namespace comes from
// "x-namespace" metadata, standing in for the auth interceptor.
type harness struct {
	srv  *push.Server
	conn *grpc.ClientConn
}

func newHarness(t *testing.T, initial *snapshot.Set, opts ...push.Option) *harness {
	t.Helper()
	srv := push.New(initial, slog.New(slog.NewTextHandler(io.Discard, nil)), opts...)
	gs := grpc.NewServer(grpc.StreamInterceptor(func(s any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		md, _ := metadata.FromIncomingContext(ss.Context())
		ns := md.Get("x-namespace")
		if len(ns) != 1 {
			return status.Error(codes.Unauthenticated, "test: no namespace")
		}
		return h(s, &ctxStream{ss, auth.WithIdentity(ss.Context(), auth.Identity{Kind: auth.KindEdge, Namespace: ns[0]})})
	}))
	selfhostv1.RegisterConfigDiscoveryServiceServer(gs, srv)
	lis := bufconn.Listen(1 << 20)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = srv.Run(ctx) }()
	go func() { _ = gs.Serve(lis) }()
	// A fixed 64 KiB window (no BDP growth), so an edge that stops reading
	// really stops the server's sends.
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		gs.Stop()
	})
	return &harness{srv: srv, conn: conn}
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }

// open starts a stream for ns and sends hello; it does not read.
func (h *harness) open(t *testing.T, ns string) selfhostv1.ConfigDiscoveryService_StreamConfigClient {
	t.Helper()
	ctx := metadata.AppendToOutgoingContext(t.Context(), "x-namespace", ns)
	s, err := selfhostv1.NewConfigDiscoveryServiceClient(h.conn).StreamConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&selfhostv1.StreamConfigRequest{Kind: &selfhostv1.StreamConfigRequest_Hello{Hello: &selfhostv1.Hello{Pod: ns}}}); err != nil {
		t.Fatal(err)
	}
	return s
}

// collect reads configs from s into a channel.
func collect(s selfhostv1.ConfigDiscoveryService_StreamConfigClient) <-chan *selfhostv1.EdgeConfig {
	ch := make(chan *selfhostv1.EdgeConfig, 1024)
	go func() {
		defer close(ch)
		for {
			m, err := s.Recv()
			if err != nil {
				return
			}
			if c := m.GetConfig(); c != nil {
				ch <- c
			}
		}
	}()
	return ch
}

func next(t *testing.T, ch <-chan *selfhostv1.EdgeConfig) *selfhostv1.EdgeConfig {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no config within 5s")
		return nil
	}
}

func TestBurstIsOnePublish(t *testing.T) {
	t.Parallel()
	h := newHarness(t, build(t, state(0)), push.WithDebounce(100*time.Millisecond))
	edge := collect(h.open(t, "team-a"))
	next(t, edge)
	sets := make([]*snapshot.Set, 100)
	for i := range sets {
		sets[i] = build(t, state(i%7+1))
	}
	for _, set := range sets { // a burst well inside one quiet period
		h.srv.ConfigChanged(set)
	}
	last := sets[len(sets)-1]
	got := next(t, edge)
	ns, _ := last.Namespace("team-a")
	if got.GetVersion() != ns.Config.GetVersion() {
		t.Fatalf("pushed %s, want the last commit's %s", got.GetVersion(), ns.Config.GetVersion())
	}
	// That no second publish follows later is TestDebounceTiming's, on
	// the fake clock.
	if st := h.srv.Stats(); st.Publishes != 1 || st.ConfigsSent != 2 || len(edge) != 0 {
		t.Fatalf("stats %+v, %d more configs; want 1 publish, 2 sends", st, len(edge))
	}
}

// TestDebounceTiming runs the debouncer alone in a synctest bubble: each
// publish is checked a nanosecond before its due time (none) and at it
// (one).
func TestDebounceTiming(t *testing.T) {
	t.Parallel()
	const debounce, maxDebounce = 100 * time.Millisecond, 250 * time.Millisecond
	sets := make([]*snapshot.Set, 12)
	for i := range sets {
		sets[i] = build(t, state(i+1))
	}
	synctest.Test(t, func(t *testing.T) {
		srv := push.New(build(t, state(0)), slog.New(slog.NewTextHandler(io.Discard, nil)),
			push.WithDebounce(debounce), push.WithMaxDebounce(maxDebounce))
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- srv.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}()
		// at sleeps until d after start and returns the publishes so far,
		// once the debouncer has done all it will do at that instant.
		at := func(start time.Time, d time.Duration) uint64 {
			time.Sleep(time.Until(start.Add(d)))
			synctest.Wait()
			return srv.Stats().Publishes
		}
		want := uint64(0)
		check := func(what string, start time.Time, d time.Duration) {
			t.Helper()
			if got := at(start, d-time.Nanosecond); got != want {
				t.Fatalf("%s: %d publishes 1ns before %v, want %d", what, got, d, want)
			}
			want++
			if got := at(start, d); got != want {
				t.Fatalf("%s: %d publishes at %v, want %d", what, got, d, want)
			}
		}

		// A burst at one instant: one publish, debounce later.
		start := time.Now()
		for _, set := range sets[:5] {
			srv.ConfigChanged(set)
		}
		check("burst", start, debounce)

		// A change inside the quiet period restarts it.
		start = time.Now()
		srv.ConfigChanged(sets[5])
		time.Sleep(60 * time.Millisecond)
		srv.ConfigChanged(sets[6])
		check("restart", start, 60*time.Millisecond+debounce)

		// A steady stream of changes, each within the quiet period, is
		// published maxDebounce after its first change.
		start = time.Now()
		for i, set := range sets[7:] {
			time.Sleep(time.Until(start.Add(time.Duration(i) * 60 * time.Millisecond)))
			srv.ConfigChanged(set)
		}
		check("steady stream", start, maxDebounce)

		// Nothing pending: nothing more, however long.
		if got := at(time.Now(), time.Hour); got != want {
			t.Fatalf("%d publishes an hour later, want %d", got, want)
		}
	})
}

// TestOnlyChangedNamespacesArePushed runs server and edges in a synctest
// bubble (gRPC over bufconn blocks durably): synctest.Wait returns once
// every push that will happen has happened, so "no push" is checked, not
// hoped for after a pause.
func TestOnlyChangedNamespacesArePushed(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, build(t, state(0)), push.WithDebounce(0))
		a, b := collect(h.open(t, "team-a")), collect(h.open(t, "team-b"))
		next(t, a)
		b1 := next(t, b)
		h.srv.ConfigChanged(build(t, state(0, "ghcr"))) // team-a's policy only
		if got := next(t, a).GetPolicy().GetAllowedPrefixes(); len(got) != 1 || got[0] != "ghcr" {
			t.Fatalf("team-a got allowed prefixes %v", got)
		}
		// An upstream: every namespace that may use it, so not team-a (ghcr
		// only), whose edges never hold other upstreams.
		h.srv.ConfigChanged(build(t, state(1, "ghcr")))
		if b2 := next(t, b); b2.GetVersion() == b1.GetVersion() {
			t.Fatal("team-b got the same version again")
		}
		synctest.Wait()
		select {
		case c := <-b:
			t.Fatalf("team-b got a push for team-a's policy change: %v", c)
		case c := <-a:
			t.Fatalf("team-a got a push for an upstream it may not use: %v", c)
		default:
		}
	})
}

func TestSlowEdgeBlocksNobody(t *testing.T) {
	t.Parallel()
	h := newHarness(t, build(t, state(200)), push.WithDebounce(0))
	h.open(t, "team-a") // never reads: its window fills, its sends block
	fast := collect(h.open(t, "team-b"))
	next(t, fast)
	var last *snapshot.Set
	for i := range 30 {
		last = build(t, state(200+i%2+1))
		h.srv.ConfigChanged(last)
		time.Sleep(5 * time.Millisecond)
	}
	want, _ := last.Namespace("team-b")
	// Generous: the property is that the fast edge gets there at all while
	// the other edge stalls, not how fast (the machine may be loaded).
	deadline := time.After(30 * time.Second)
	for {
		select {
		case c := <-fast:
			if c.GetVersion() == want.Config.GetVersion() {
				return
			}
		case <-deadline:
			t.Fatal("the fast edge never got the last version while another edge stalled")
		}
	}
}

func TestHelloTimeout(t *testing.T) {
	t.Parallel()
	h := newHarness(t, build(t, state(0)), push.WithHelloTimeout(100*time.Millisecond))
	ctx := metadata.AppendToOutgoingContext(t.Context(), "x-namespace", "team-a")
	s, err := selfhostv1.NewConfigDiscoveryServiceClient(h.conn).StreamConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
}

func TestUnknownNamespaceStream(t *testing.T) {
	t.Parallel()
	h := newHarness(t, build(t, state(0)))
	s := h.open(t, "team-z")
	if _, err := s.Recv(); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("err = %v, want FailedPrecondition", err)
	}
}

func TestRunOnce(t *testing.T) {
	t.Parallel()
	set := build(t, state(0))
	// In a bubble, synctest.Wait returns once the first Run is parked in
	// its loop, so the second call is the second.
	synctest.Test(t, func(t *testing.T) {
		srv := push.New(set, slog.New(slog.NewTextHandler(io.Discard, nil)))
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- srv.Run(ctx) }()
		synctest.Wait()
		if err := srv.Run(ctx); err == nil {
			t.Error("second Run did not fail")
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
