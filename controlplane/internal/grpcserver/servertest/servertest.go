// Package servertest runs a whole control plane in-process — the real
// grpcserver.Server with its YAML config source in a temporary directory —
// for tests and benchmarks, over bufconn or a real loopback listener, and
// gives tests an edge client that speaks the config stream.
package servertest

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/test/bufconn"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config/configfile"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/grpcserver"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// Tokens and secrets of DefaultConfig. Tests search responses and logs for
// the secrets.
const (
	AdminToken     = "admin-token-0123456789abcdef"
	PullTokenA     = "pull-token-team-a-do-not-leak"
	UpstreamSecret = "upstream-password-do-not-leak"
	EdgeAddressA   = "127.0.0.1:30500"
	EdgeAddressB   = "127.0.0.1:30501"
)

// EdgeToken is the edge token of namespace ns in DefaultConfig.
func EdgeToken(ns string) string { return "edge-token-" + ns + "-0123456789" }

// DefaultConfig has the four default upstreams plus "test" (with
// credentials), and two namespaces: team-a (pull token, every upstream)
// and team-b (ghcr only).
const DefaultConfig = `
adminTokens: ["` + AdminToken + `"]
upstreams:
  - {prefix: dockerhub, url: "https://registry-1.docker.io", hosts: [docker.io, index.docker.io]}
  - {prefix: ghcr, url: "https://ghcr.io"}
  - {prefix: quay, aliases: [quayio], url: "https://quay.io"}
  - {prefix: k8s, url: "https://registry.k8s.io"}
  - prefix: test
    url: http://127.0.0.1:5001
    credentials: {username: tester, password: ` + UpstreamSecret + `}
    tagTTL: 5m
namespaces:
  team-a:
    edgeToken: edge-token-team-a-0123456789
    pullToken: ` + PullTokenA + `
    edgeAddress: "` + EdgeAddressA + `"
  team-b:
    edgeToken: edge-token-team-b-0123456789
    allowedPrefixes: [ghcr]
    edgeAddress: "` + EdgeAddressB + `"
`

// Options of Start.
type Options struct {
	// Config is the YAML file's content; empty means DefaultConfig.
	// Ignored when Dir already holds controlplane.yaml.
	Config string
	// Dir holds the config and state files; empty means a new temporary
	// directory. Pass an earlier Env's Dir to restart on its state.
	Dir string
	// Debounce of the push server (zero pushes at once).
	Debounce time.Duration
	// Listen on a real TCP address ("127.0.0.1:0") instead of bufconn.
	Listen string
	// Server lets a test adjust the server options.
	Server func(*grpcserver.Options)
}

// Env is a running control plane.
type Env struct {
	Server *grpcserver.Server
	Dir    string
	// Addr is the real listener's address ("" with bufconn).
	Addr string
	// Conn is a client connection without credentials; add tokens per
	// call (AdminContext, EdgeContext).
	Conn  *grpc.ClientConn
	Admin selfhostv1.AdminServiceClient
	// Logs holds everything the server logged, as JSON lines.
	Logs *Buffer

	stop     context.CancelFunc
	stopOnce sync.Once
	done     chan error
}

// Start runs a control plane until the test ends (or Stop).
func Start(t testing.TB, o Options) *Env {
	t.Helper()
	dir := o.Dir
	if dir == "" {
		dir = t.TempDir()
	}
	cfgPath := filepath.Join(dir, "controlplane.yaml")
	if _, err := os.Stat(cfgPath); os.IsNotExist(err) {
		cfg := o.Config
		if cfg == "" {
			cfg = DefaultConfig
		}
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	logs := &Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts := grpcserver.Options{Source: configfile.New(cfgPath, "", log), Logger: log, Debounce: o.Debounce}
	if o.Server != nil {
		o.Server(&opts)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := grpcserver.New(ctx, opts)
	if err != nil {
		cancel()
		t.Fatalf("grpcserver.New: %v", err)
	}
	var (
		lis    net.Listener
		dialer func(context.Context, string) (net.Conn, error)
		target = "passthrough:///bufconn"
	)
	if o.Listen != "" {
		if lis, err = net.Listen("tcp", o.Listen); err != nil {
			cancel()
			t.Fatal(err)
		}
		target = lis.Addr().String()
	} else {
		bl := bufconn.Listen(1 << 20)
		lis = bl
		dialer = func(ctx context.Context, _ string) (net.Conn, error) { return bl.DialContext(ctx) }
	}
	e := &Env{Server: srv, Dir: dir, Logs: logs, stop: cancel, done: make(chan error, 1)}
	if o.Listen != "" {
		e.Addr = target
	}
	go func() { e.done <- srv.Serve(ctx, lis) }()
	dialOpts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if dialer != nil {
		dialOpts = append(dialOpts, grpc.WithContextDialer(dialer))
	}
	conn, err := grpc.NewClient(target, dialOpts...)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	e.Conn = conn
	e.Admin = selfhostv1.NewAdminServiceClient(conn)
	t.Cleanup(func() { e.Stop(t) })
	return e
}

// Stop shuts the control plane down and waits for it; later calls do
// nothing.
func (e *Env) Stop(t testing.TB) {
	t.Helper()
	e.stopOnce.Do(func() { e.stopAndWait(t) })
}

func (e *Env) stopAndWait(t testing.TB) {
	e.stop()
	select {
	case err := <-e.done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("control plane did not stop within 10s")
	}
	_ = e.Conn.Close() // the control plane is gone; nothing to report
}

// StatePath is the state file of the Env.
func (e *Env) StatePath() string { return filepath.Join(e.Dir, configfile.StateFileName) }

// AdminContext adds the admin token to ctx.
func AdminContext(ctx context.Context) context.Context {
	return WithToken(ctx, AdminToken)
}

// WithToken adds "authorization: Bearer <token>" to ctx.
func WithToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// Buffer is a goroutine-safe log sink.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
