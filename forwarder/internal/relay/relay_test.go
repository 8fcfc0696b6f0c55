package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
)

// echoServer accepts connections on loopback and, for each, reads
// everything until the client's half-close, then writes prefix and what
// it read back and closes: a half-close must pass through the relay for
// the answer to come.
func echoServer(t *testing.T, prefix string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				b, err := io.ReadAll(c)
				if err != nil {
					return
				}
				_, _ = c.Write(append([]byte(prefix), b...))
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// roundTrip sends body to addr, half-closes and returns the answer.
func roundTrip(addr string, body []byte) ([]byte, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(body); err != nil {
		return nil, err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return nil, err
	}
	return io.ReadAll(c)
}

func newRelay(t *testing.T) (*Relay, *testkit.LogBuffer) {
	t.Helper()
	logs := &testkit.LogBuffer{}
	r := New(Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.Close(ctx); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("relay log:\n%s", logs)
		}
	})
	return r, logs
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// TestForwardFollowsRoutes: connections to a route's port reach its
// target with a half-close passed on and large bodies intact; a changed
// target applies to the next connection; a removed route's port is
// closed; a port held by another process is reported and taken once it
// is free.
func TestForwardFollowsRoutes(t *testing.T) {
	t.Parallel()
	r, _ := newRelay(t)
	a, b := echoServer(t, "a:"), echoServer(t, "b:")
	port := testkit.FreePort(t)
	r.Set([]Route{{Name: "team-a/selfhost-edge", Port: port, Target: a}})

	big := make([]byte, 8<<20)
	_, _ = rand.Read(big)
	for _, tc := range []struct {
		name string
		body []byte
	}{{"empty", nil}, {"small", []byte("hello")}, {"8 MiB", big}} {
		got, err := roundTrip(addr(port), tc.body)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if want := append([]byte("a:"), tc.body...); !bytes.Equal(got, want) {
			t.Fatalf("%s: got %d bytes, want %d", tc.name, len(got), len(want))
		}
	}

	r.Set([]Route{{Name: "team-a/selfhost-edge", Port: port, Target: b}})
	if got, err := roundTrip(addr(port), []byte("x")); err != nil || string(got) != "b:x" {
		t.Fatalf("after the target changed: %q, %v", got, err)
	}

	r.Set(nil)
	if _, err := net.DialTimeout("tcp", addr(port), 5*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("the removed route's port still answers: %v", err)
	}
	if s := r.Status(); len(s) != 0 {
		t.Fatalf("status after removal: %+v", s)
	}

	// Another process holds the port: reported, then taken when free.
	holder, err := net.Listen("tcp", addr(port))
	if err != nil {
		t.Fatal(err)
	}
	r.Set([]Route{{Name: "team-a/selfhost-edge", Port: port, Target: a}})
	s := r.Status()
	if len(s) != 1 || s[0].Listening || !strings.Contains(s[0].BindError, "address already in use") {
		t.Fatalf("status with the port held: %+v", s)
	}
	_ = holder.Close()
	r.Set([]Route{{Name: "team-a/selfhost-edge", Port: port, Target: a}})
	if s := r.Status(); len(s) != 1 || !s[0].Listening || s[0].BindError != "" {
		t.Fatalf("status once the port is free: %+v", s)
	}
	if got, err := roundTrip(addr(port), []byte("y")); err != nil || string(got) != "a:y" {
		t.Fatalf("after taking the port: %q, %v", got, err)
	}
}

// TestForwardTargetDown: a client of a route whose target refuses is
// closed at once, not left hanging, and the relay keeps serving.
func TestForwardTargetDown(t *testing.T) {
	t.Parallel()
	r, logs := newRelay(t)
	down := netip.MustParseAddrPort(testkit.FreeAddr(t))
	port := testkit.FreePort(t)
	r.Set([]Route{{Name: "team-a/selfhost-edge", Port: port, Target: down}})
	got, err := roundTrip(addr(port), []byte("x"))
	if len(got) != 0 {
		t.Fatalf("answer from a down target: %q, %v", got, err)
	}
	testkit.WaitFor(t, "the dial failure logged", 10*time.Second, func() bool { return logs.Count("dial the edge Service") == 1 })
	up := echoServer(t, "up:")
	r.Set([]Route{{Name: "team-a/selfhost-edge", Port: port, Target: up}})
	if got, err := roundTrip(addr(port), []byte("x")); err != nil || string(got) != "up:x" {
		t.Fatalf("after the target came up: %q, %v", got, err)
	}
}

// TestProbe: the relay's own listener answering is PathForwarder; a
// port another process answers over HTTP (as kube-proxy's loopback
// NodePort proxy does with the edge behind it) is PathNodePort; a port
// held by something that is not a registry is an error.
func TestProbe(t *testing.T) {
	t.Parallel()
	registry := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(registry.Close)
	target := netip.MustParseAddrPort(registry.Listener.Addr().String())
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = silent.Close() })

	r, _ := newRelay(t)
	own := testkit.FreePort(t)
	registryPort := target.Port()
	silentPort := silent.Addr().(*net.TCPAddr).Port
	r.Set([]Route{
		{Name: "team-a/selfhost-edge", Port: own, Target: target},
		{Name: "team-b/selfhost-edge", Port: int(registryPort), Target: target},
		{Name: "team-c/selfhost-edge", Port: silentPort, Target: target},
	})
	for _, tc := range []struct {
		name    string
		port    int
		want    Path
		wantErr string
	}{
		{"own listener", own, PathForwarder, ""},
		{"held by a registry", int(registryPort), PathNodePort, ""},
		{"held by something else", silentPort, "", "no HTTP answer"},
		{"no route", 1, "", "no route"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			got, err := r.Probe(ctx, tc.port, time.Second)
			if got != tc.want || (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Probe = %q, %v; want %q, error containing %q", got, err, tc.want, tc.wantErr)
			}
		})
	}
}
