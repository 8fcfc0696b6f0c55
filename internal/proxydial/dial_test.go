package proxydial_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/clashnode"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/proxydial"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// helloServer answers every request with "hello <path>".
func helloServer(t *testing.T, useTLS bool) *httptest.Server {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello "+r.URL.Path+" "+r.Proto)
	})
	var srv *httptest.Server
	if useTLS {
		srv = httptest.NewUnstartedServer(h)
		srv.EnableHTTP2 = true
		srv.StartTLS()
	} else {
		srv = httptest.NewServer(h)
	}
	t.Cleanup(srv.Close)
	return srv
}

// node builds a Node from a proxy server's Clash JSON, as the control
// protocol delivers it.
func node(t *testing.T, ps *harness.ProxyServer) *clashnode.Node {
	t.Helper()
	n, err := clashnode.FromJSON(ps.Name, ps.NodeJSON())
	if err != nil {
		t.Fatalf("node %s: %v", ps.Name, err)
	}
	return n
}

// get fetches url through d and returns the body.
func get(ctx context.Context, d *proxydial.Dialer, srv *httptest.Server, path string) (string, *http.Response, error) {
	tr := &http.Transport{DialContext: d.DialContext, ForceAttemptHTTP2: true, DisableKeepAlives: true}
	if srv.TLS != nil {
		tr.TLSClientConfig = srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
	if err != nil {
		return "", nil, err
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), resp, err
}

func TestGetThroughEachNodeType(t *testing.T) {
	t.Parallel()
	servers := map[string]func(testing.TB, harness.ProxyOptions) *harness.ProxyServer{
		"ss aes-256-gcm": func(t testing.TB, o harness.ProxyOptions) *harness.ProxyServer {
			return harness.StartShadowsocks(t, o)
		},
		"ss chacha20-ietf-poly1305": func(t testing.TB, o harness.ProxyOptions) *harness.ProxyServer {
			o.Cipher = "chacha20-ietf-poly1305"
			return harness.StartShadowsocks(t, o)
		},
		"socks5 microsocks": harness.StartMicrosocks,
		"http tinyproxy":    harness.StartTinyproxy,
		"trojan":            harness.StartTrojan,
		"vmess v2ray":       harness.StartV2RayVmess,
	}
	plain, secure := helloServer(t, false), helloServer(t, true)
	for name, start := range servers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ps := start(t, harness.ProxyOptions{})
			rec := newRecorder()
			d, err := proxydial.NewDialer("test", []*clashnode.Node{node(t, ps)}, proxydial.WithObserver(rec))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			body, _, err := get(ctx, d, plain, "/plain")
			if err != nil || body != "hello /plain HTTP/1.1" {
				t.Fatalf("GET http through %s: %q, %v", ps.Name, body, err)
			}
			body, resp, err := get(ctx, d, secure, "/tls")
			if err != nil || body != "hello /tls HTTP/2.0" || resp.ProtoMajor != 2 {
				t.Fatalf("GET https (HTTP/2) through %s: %q, %v", ps.Name, body, err)
			}
			if got := rec.count(ps.Name, proxydial.ResultOK); got != 2 {
				t.Errorf("ok dials through %s = %d, want 2", ps.Name, got)
			}
			if _, f := rec.snapshot(); len(f) != 0 {
				t.Errorf("failures reported: %+v", f)
			}
		})
	}
}

// TestShareLinks dials through nodes parsed from the share links of the
// real servers, as a --proxy flag gives them.
func TestShareLinks(t *testing.T) {
	t.Parallel()
	srv := helloServer(t, false)
	for _, ps := range []*harness.ProxyServer{
		harness.StartShadowsocks(t, harness.ProxyOptions{Name: "ss link"}),
		harness.StartMicrosocks(t, harness.ProxyOptions{Name: "socks link"}),
		harness.StartTinyproxy(t, harness.ProxyOptions{Name: "http link"}),
		harness.StartTrojan(t, harness.ProxyOptions{Name: "trojan link"}),
		harness.StartV2RayVmess(t, harness.ProxyOptions{Name: "vmess link"}),
	} {
		nodes, err := proxydial.ParseNodes(ps.Link)
		if err != nil {
			t.Fatalf("ParseNodes(%s link): %v", ps.Type, err)
		}
		if len(nodes) != 1 || nodes[0].Name() != ps.Name || nodes[0].Server() != ps.Addr {
			t.Fatalf("%s link: got %v", ps.Type, nodes)
		}
		d, _ := proxydial.NewDialer("test", nodes)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		body, _, err := get(ctx, d, srv, "/link")
		cancel()
		if err != nil || !strings.HasPrefix(body, "hello /link") {
			t.Errorf("GET through %s link: %q, %v", ps.Type, body, err)
		}
	}
}

// closedAddr returns a 127.0.0.1 port that refuses connections for the
// whole test: a socket is bound to it but never listens, so no parallel
// test's server can take the port between here and the dial.
func closedAddr(t *testing.T) (string, int) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1", sa.(*syscall.SockaddrInet4).Port
}

func deadSSNode(t *testing.T, name string) *clashnode.Node {
	t.Helper()
	host, port := closedAddr(t)
	n, err := clashnode.New(map[string]any{"name": name, "type": "ss", "server": host, "port": port,
		"cipher": "aes-256-gcm", "password": "dead-node-secret"})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestFailoverFromDeadNode(t *testing.T) {
	t.Parallel()
	srv := helloServer(t, true)
	live := harness.StartShadowsocks(t, harness.ProxyOptions{Name: "live"})
	dead := deadSSNode(t, "dead")
	rec := newRecorder()
	health := proxydial.NewHealth(time.Minute)
	d, err := proxydial.NewDialer("dockerhub", []*clashnode.Node{dead, node(t, live)},
		proxydial.WithObserver(rec), proxydial.WithHealth(health))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 3 {
		body, _, err := get(ctx, d, srv, "/x")
		if err != nil || !strings.HasPrefix(body, "hello /x") {
			t.Fatalf("GET %d: %q, %v", i, body, err)
		}
	}
	// The first request found the dead node; the next two skipped it.
	if got := rec.count("dead", proxydial.ResultError); got != 1 {
		t.Errorf("failed dials through the dead node = %d, want 1 (then skipped)", got)
	}
	if got := rec.count("live", proxydial.ResultOK); got != 3 {
		t.Errorf("ok dials through the live node = %d, want 3", got)
	}
	failovers, failures := rec.snapshot()
	if failovers != 1 {
		t.Errorf("failovers = %d, want 1", failovers)
	}
	if len(failures) != 1 || failures[0].Node != "dead" || failures[0].Prefix != "dockerhub" ||
		!strings.Contains(failures[0].Error, "connection refused") {
		t.Fatalf("failures = %+v, want one refused dial of dead for dockerhub", failures)
	}
	if strings.Contains(failures[0].Error, "dead-node-secret") {
		t.Errorf("failure text holds the node password: %q", failures[0].Error)
	}
	if !health.RecentlyFailed("dead") || health.RecentlyFailed("live") {
		t.Errorf("health: dead failed=%v live failed=%v", health.RecentlyFailed("dead"), health.RecentlyFailed("live"))
	}
}

func TestAllNodesDead(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	d, _ := proxydial.NewDialer("test", []*clashnode.Node{deadSSNode(t, "a"), deadSSNode(t, "b")}, proxydial.WithObserver(rec))
	_, err := d.DialContext(context.Background(), "tcp", "127.0.0.1:80")
	if !errors.Is(err, proxydial.ErrAllNodesFailed) {
		t.Fatalf("err = %v, want ErrAllNodesFailed", err)
	}
	if _, f := rec.snapshot(); len(f) != 2 {
		t.Errorf("failures = %+v, want both nodes", f)
	}
}

// TestDeadDestinationMovesConnection: ss, trojan and vmess accept the dial
// and only close the connection when they cannot reach the destination. A
// proxy that behaves so (accept, read the request, close) is first; the
// connection must move to the live node and replay the request, unseen by
// the HTTP client.
func TestDeadDestinationMovesConnection(t *testing.T) {
	t.Parallel()
	for _, useTLS := range []bool{false, true} {
		srv := helloServer(t, useTLS)
		closer := startCloser(t)
		bad, err := clashnode.New(map[string]any{"name": "closes", "type": "ss", "server": "127.0.0.1",
			"port": closer, "cipher": "aes-256-gcm", "password": "x-secret"})
		if err != nil {
			t.Fatal(err)
		}
		live := harness.StartShadowsocks(t, harness.ProxyOptions{Name: "live"})
		rec := newRecorder()
		d, _ := proxydial.NewDialer("test", []*clashnode.Node{bad, node(t, live)}, proxydial.WithObserver(rec))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		body, _, err := get(ctx, d, srv, "/moved")
		cancel()
		if err != nil || !strings.HasPrefix(body, "hello /moved") {
			t.Fatalf("tls=%v: GET: %q, %v", useTLS, body, err)
		}
		if rec.count("closes", proxydial.ResultOK) != 1 || rec.count("closes", proxydial.ResultNoResponse) != 1 {
			t.Errorf("tls=%v: dials = %v, want closes ok then no_response", useTLS, rec.dials)
		}
		if failovers, f := rec.snapshot(); failovers != 1 || len(f) != 1 || f[0].Node != "closes" {
			t.Errorf("tls=%v: failovers %d, failures %+v", useTLS, failovers, f)
		}
	}
}

// startCloser listens on 127.0.0.1 and closes every connection after its
// first bytes arrive, like ss-server when the destination is down.
func startCloser(t *testing.T) int {
	t.Helper()
	return serveConns(t, func(c net.Conn) {
		buf := make([]byte, 1024)
		_, _ = c.Read(buf)
		c.Close()
	})
}

// serveConns listens on 127.0.0.1, hands every accepted connection to
// handle on its own goroutine until the test ends, and returns the port.
func serveConns(t *testing.T, handle func(net.Conn)) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// TestWrongPassword: ss-server answers nothing to a client with the wrong
// key. The first-byte timeout turns that into a failure within the
// dialer's deadlines, and the next node carries the request.
func TestWrongPassword(t *testing.T) {
	t.Parallel()
	srv := helloServer(t, false)
	ss := harness.StartShadowsocks(t, harness.ProxyOptions{Name: "ss"})
	wrong := map[string]any{}
	for k, v := range ss.Node {
		wrong[k] = v
	}
	wrong["name"], wrong["password"] = "wrong", "not-the-password"
	wn, err := clashnode.New(wrong)
	if err != nil {
		t.Fatal(err)
	}
	const fbt = time.Second
	t.Run("alone", func(t *testing.T) {
		t.Parallel()
		rec := newRecorder()
		d, _ := proxydial.NewDialer("test", []*clashnode.Node{wn}, proxydial.WithObserver(rec),
			proxydial.WithDialTimeout(fbt), proxydial.WithFirstByteTimeout(fbt))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// The context allows 30 s: ending well before that, with the
		// failure reported, shows the first-byte timeout cut the hang.
		_, _, err := get(ctx, d, srv, "/wrong")
		if err == nil {
			t.Fatal("GET through a node with the wrong password succeeded")
		}
		if ctx.Err() != nil {
			t.Errorf("the wrong password hung until the context deadline instead of the first-byte timeout %v", fbt)
		}
		if _, f := rec.snapshot(); len(f) != 1 || f[0].Node != "wrong" || strings.Contains(f[0].Error, "not-the-password") {
			t.Errorf("failures = %+v, want one for wrong without its password", f)
		}
	})
	t.Run("then live", func(t *testing.T) {
		t.Parallel()
		d, _ := proxydial.NewDialer("test", []*clashnode.Node{wn, node(t, ss)},
			proxydial.WithDialTimeout(fbt), proxydial.WithFirstByteTimeout(fbt))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		body, _, err := get(ctx, d, srv, "/after")
		if err != nil || !strings.HasPrefix(body, "hello /after") {
			t.Fatalf("GET: %q, %v", body, err)
		}
	})
}

// TestTLSUpstreamThroughSS checks certificate verification end to end:
// the TLS session is with the destination, not the proxy.
func TestTLSUpstreamThroughSS(t *testing.T) {
	t.Parallel()
	srv := helloServer(t, true)
	ss := harness.StartShadowsocks(t, harness.ProxyOptions{})
	d, _ := proxydial.NewDialer("test", []*clashnode.Node{node(t, ss)})
	tr := &http.Transport{DialContext: d.DialContext, TLSClientConfig: &tls.Config{}}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
	if _, err := tr.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted upstream certificate: err = %v, want a verification error", err)
	}
}

// TestUnusedConnectionClosedIsNoFailure: a connection closed after the
// first-byte timeout with nothing ever written to it (an idle, never used
// connection timed out by the server) is not a node failure.
func TestUnusedConnectionClosedIsNoFailure(t *testing.T) {
	t.Parallel()
	port := serveConns(t, func(c net.Conn) { c.Close() })
	n, err := clashnode.New(map[string]any{"name": "idle", "type": "ss", "server": "127.0.0.1",
		"port": port, "cipher": "aes-256-gcm", "password": "x-secret"})
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	d, _ := proxydial.NewDialer("test", []*clashnode.Node{n, deadSSNode(t, "next")}, proxydial.WithObserver(rec),
		proxydial.WithFirstByteTimeout(50*time.Millisecond))
	conn, err := d.DialContext(context.Background(), "tcp", "127.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	time.Sleep(100 * time.Millisecond)
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("read from a closed connection succeeded")
	}
	if failovers, f := rec.snapshot(); failovers != 0 || len(f) != 0 {
		t.Fatalf("failovers %d, failures %+v: an unused connection's close counted against the node", failovers, f)
	}
}

// TestDeadDestinationRealServers: real ss, trojan and vmess servers accept
// the dial and then close when the destination is down. Each is counted
// as no_response and reported, and the connection moves on until none is
// left.
func TestDeadDestinationRealServers(t *testing.T) {
	t.Parallel()
	servers := []*harness.ProxyServer{
		harness.StartShadowsocks(t, harness.ProxyOptions{Name: "ss"}),
		harness.StartTrojan(t, harness.ProxyOptions{Name: "trojan"}),
		harness.StartV2RayVmess(t, harness.ProxyOptions{Name: "vmess"}),
	}
	var nodes []*clashnode.Node
	for _, ps := range servers {
		nodes = append(nodes, node(t, ps))
	}
	rec := newRecorder()
	d, _ := proxydial.NewDialer("test", nodes, proxydial.WithObserver(rec), proxydial.WithFirstByteTimeout(5*time.Second))
	_, port := closedAddr(t)
	tr := &http.Transport{DialContext: d.DialContext}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(port)+"/", nil)
	if _, err := tr.RoundTrip(req); err == nil {
		t.Fatal("GET to a closed port through the proxies succeeded")
	}
	// No wall-clock bound here: the counts below show every node was tried
	// and recorded as giving no response.
	for _, ps := range servers {
		if rec.count(ps.Name, proxydial.ResultOK) != 1 || rec.count(ps.Name, proxydial.ResultNoResponse) != 1 {
			t.Errorf("%s: dials %v, want one ok then one no_response", ps.Name, rec.dials)
		}
	}
	if failovers, f := rec.snapshot(); failovers != 2 || len(f) != 3 {
		t.Errorf("failovers %d (want 2), failures %+v (want 3)", failovers, f)
	}
}
