package configclient_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/configclient"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/configclient/controltest"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

const (
	wait      = 5 * time.Second
	namespace = "team-a"
)

// fakeApplier records what it applied; fail makes it refuse.
type fakeApplier struct {
	mu      sync.Mutex
	applied []*selfhostv1.EdgeConfig
	fail    error
}

func (a *fakeApplier) Apply(cfg *selfhostv1.EdgeConfig) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail != nil {
		return a.fail
	}
	a.applied = append(a.applied, proto.Clone(cfg).(*selfhostv1.EdgeConfig))
	return nil
}

func (a *fakeApplier) current() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.applied) == 0 {
		return ""
	}
	return a.applied[len(a.applied)-1].GetVersion()
}

func (a *fakeApplier) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.applied)
}

type fixedStats struct{}

func (fixedStats) Stats() *selfhostv1.EdgeStats {
	return &selfhostv1.EdgeStats{CacheHits: 7, CacheMisses: 3, BytesFromCache: 1 << 20, BytesFromUpstream: 512, StaleServes: 1}
}

func edgeConfig(version string) *selfhostv1.EdgeConfig {
	return &selfhostv1.EdgeConfig{
		Version: version, Namespace: namespace,
		Upstreams: []*selfhostv1.Upstream{{
			Prefix: "test", Url: "http://127.0.0.1:5001", TagTtl: durationpb.New(time.Minute),
			Credentials: &selfhostv1.Credentials{Username: "u", Password: "upstream-secret"},
		}},
		Policy: &selfhostv1.NamespacePolicy{AllowedPrefixes: []string{"test"}, PullToken: "pull-secret", MaxConcurrentFills: 4},
	}
}

// switchNet is a bufconn network whose server can be replaced, so a test
// can stop the control plane and start a new one at the same "address".
type switchNet struct {
	lis atomic.Pointer[bufconn.Listener]
}

func (n *switchNet) start(t *testing.T) *controltest.Server {
	lis := bufconn.Listen(1 << 20)
	n.lis.Store(lis)
	return controltest.Start(t, lis)
}

func (n *switchNet) dial() grpc.DialOption {
	return grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		return n.lis.Load().DialContext(ctx)
	})
}

// syncBuffer is a log sink safe for the client's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type harness struct {
	applier *fakeApplier
	client  *configclient.Client
	logs    *syncBuffer
	stop    func()
}

// startClient runs a client against dial until the test ends.
func startClient(t *testing.T, dial grpc.DialOption, inv configclient.TagInvalidator, opts ...configclient.Option) *harness {
	t.Helper()
	h := newClient(t, dial, inv, opts...)
	h.run(t)
	return h
}

func newClient(t *testing.T, dial grpc.DialOption, inv configclient.TagInvalidator, opts ...configclient.Option) *harness {
	t.Helper()
	h := &harness{applier: &fakeApplier{}, logs: &syncBuffer{}}
	base := []configclient.Option{
		configclient.WithDialOptions(dial), configclient.WithBackoff(10*time.Millisecond, 50*time.Millisecond),
		configclient.WithPod("edge-0"), configclient.WithEdgeVersion("v9.9.9"), configclient.WithAddress("127.0.0.1:30500"),
		configclient.WithLogger(slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
	}
	c, err := configclient.New(controltest.BufconnTarget, namespace, h.applier, fixedStats{}, inv, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	h.client = c
	return h
}

func (h *harness) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.client.Run(ctx) }()
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(wait):
				t.Error("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(h.stop)
}

func writeToken(t *testing.T, path, token string) {
	t.Helper()
	// Replaced by rename, as the kubelet does for projected tokens.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestHelloAndToken(t *testing.T) {
	t.Parallel()
	srv, dial := controltest.StartBufconn(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeToken(t, tokenFile, "tok-hello-81f2")
	h := startClient(t, dial, nil, configclient.WithTokenFile(tokenFile))

	got := controltest.Next(t, srv.Hellos, wait)
	want := &selfhostv1.Hello{Namespace: namespace, Pod: "edge-0", EdgeVersion: "v9.9.9", Address: "127.0.0.1:30500"}
	if !proto.Equal(got.Msg, want) {
		t.Fatalf("hello = %v, want %v", got.Msg, want)
	}
	if got.Token != "tok-hello-81f2" {
		t.Fatalf("token = %q", got.Token)
	}
	h.stop()
	if strings.Contains(h.logs.String(), "tok-hello-81f2") {
		t.Fatalf("token in logs:\n%s", h.logs.String())
	}
}

func TestApplyAndAck(t *testing.T) {
	t.Parallel()
	srv, dial := controltest.StartBufconn(t)
	state := t.TempDir()
	h := startClient(t, dial, nil, configclient.WithStateDir(state))
	if hello := controltest.Next(t, srv.Hellos, wait); hello.Msg.GetLastAppliedVersion() != "" {
		t.Fatalf("first hello %v", hello.Msg)
	}
	nonce := srv.SetConfig(edgeConfig("v1"))
	ack := controltest.Next(t, srv.Acks, wait)
	if !ack.GetAccepted() || ack.GetVersion() != "v1" || ack.GetNonce() == "" || ack.GetErrorDetail() != "" {
		t.Fatalf("ack = %v (sent nonce %s)", ack, nonce)
	}
	if h.applier.current() != "v1" {
		t.Fatalf("applied %q", h.applier.current())
	}
	st := h.client.Status()
	if !st.Connected || st.Version != "v1" || st.LastNACK != "" {
		t.Fatalf("status %+v", st)
	}
	// Persisted, owner-only, with the credentials it needs to restart.
	fi, err := os.Stat(filepath.Join(state, "edge-config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v", fi.Mode().Perm())
	}
	// A push of the same version after a reconnect is ACKed, not re-applied.
	srv.BreakStreams()
	ack = controltest.Next(t, srv.Acks, wait)
	if !ack.GetAccepted() || ack.GetVersion() != "v1" {
		t.Fatalf("ack after reconnect = %v", ack)
	}
	if hello := controltest.Next(t, srv.Hellos, wait); hello.Msg.GetLastAppliedVersion() != "v1" {
		t.Fatalf("hello after reconnect %v", hello.Msg)
	}
	if h.applier.count() != 1 {
		t.Fatalf("applied %d times, want 1", h.applier.count())
	}
	if n := srv.ForeignNonces.Load(); n != 0 {
		t.Fatalf("%d ACKs with a nonce the server never sent", n)
	}
	if strings.Contains(h.logs.String(), "upstream-secret") || strings.Contains(h.logs.String(), "pull-secret") {
		t.Fatalf("secrets in logs:\n%s", h.logs.String())
	}
}

func TestNACK(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		mutate    func(*selfhostv1.EdgeConfig)
		applyFail error
		field     string
	}{
		{"bad url", func(c *selfhostv1.EdgeConfig) { c.Upstreams[0].Url = "ftp://x" }, nil, "upstreams[0].url"},
		{"duplicate prefix", func(c *selfhostv1.EdgeConfig) {
			c.Upstreams = append(c.Upstreams, &selfhostv1.Upstream{Prefix: "test", Url: "http://x"})
		}, nil, "upstreams[1]"},
		{"reserved prefix", func(c *selfhostv1.EdgeConfig) { c.Upstreams[0].Prefix = "v2"; c.Policy = nil }, nil, "upstreams[0].prefix"},
		{"unknown allowed prefix", func(c *selfhostv1.EdgeConfig) { c.Policy.AllowedPrefixes = []string{"nope"} }, nil, "policy.allowed_prefixes[0]"},
		{"other namespace", func(c *selfhostv1.EdgeConfig) { c.Namespace = "team-b" }, nil, "namespace"},
		{"no version", func(c *selfhostv1.EdgeConfig) { c.Version = "" }, nil, "version"},
		{"applier refuses", func(*selfhostv1.EdgeConfig) {}, errors.New("upstreams[0]: cannot build client"), "upstreams[0]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, dial := controltest.StartBufconn(t)
			state := t.TempDir()
			h := startClient(t, dial, nil, configclient.WithStateDir(state))
			srv.SetConfig(edgeConfig("v1"))
			if ack := controltest.Next(t, srv.Acks, wait); !ack.GetAccepted() {
				t.Fatalf("v1 NACKed: %v", ack)
			}
			bad := edgeConfig("v2")
			tc.mutate(bad)
			h.applier.mu.Lock()
			h.applier.fail = tc.applyFail
			h.applier.mu.Unlock()
			srv.SetConfig(bad)
			ack := controltest.Next(t, srv.Acks, wait)
			if ack.GetAccepted() || !strings.Contains(ack.GetErrorDetail(), tc.field) || ack.GetNonce() == "" {
				t.Fatalf("ack = %v, want a NACK naming %q", ack, tc.field)
			}
			if h.applier.current() != "v1" {
				t.Fatalf("applied %q, want v1 kept", h.applier.current())
			}
			st := h.client.Status()
			if st.Version != "v1" || !strings.Contains(st.LastNACK, tc.field) {
				t.Fatalf("status %+v", st)
			}
			if data, _ := os.ReadFile(filepath.Join(state, "edge-config.json")); !strings.Contains(string(data), `"v1"`) {
				t.Fatalf("persisted config is not v1:\n%s", data)
			}
			// The next good snapshot clears the NACK.
			h.applier.mu.Lock()
			h.applier.fail = nil
			h.applier.mu.Unlock()
			srv.SetConfig(edgeConfig("v3"))
			if ack := controltest.Next(t, srv.Acks, wait); !ack.GetAccepted() || ack.GetVersion() != "v3" {
				t.Fatalf("v3: %v", ack)
			}
			if st := h.client.Status(); st.Version != "v3" || st.LastNACK != "" {
				t.Fatalf("status after v3 %+v", st)
			}
			if n := srv.ForeignNonces.Load(); n != 0 {
				t.Fatalf("%d ACKs with a nonce the server never sent", n)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	t.Parallel()
	a := &fakeApplier{}
	for name, f := range map[string]func() error{
		"no target":    func() error { _, err := configclient.New("", namespace, a, nil, nil); return err },
		"no namespace": func() error { _, err := configclient.New("x:1", "", a, nil, nil); return err },
		"no applier":   func() error { _, err := configclient.New("x:1", namespace, nil, nil, nil); return err },
		"bad target":   func() error { _, err := configclient.New("%%%", namespace, a, nil, nil); return err },
	} {
		if f() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
