package server

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
)

// TestShutdownDrains: after the context ends /readyz says draining and new
// connections are still served during the delay; then the listener closes,
// the in-flight response completes, and serve returns nil.
func TestShutdownDrains(t *testing.T) {
	t.Parallel()
	started, release := make(chan struct{}), make(chan struct{})
	const half = "first half;"
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, half)
		w.(http.Flusher).Flush()
		close(started)
		<-release
		_, _ = io.WriteString(w, "second half")
	})
	mux.HandleFunc("/fast", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	draining := make(chan struct{})
	done := make(chan error, 1)
	sd := shutdown{delay: 2 * time.Second, timeout: 10 * time.Second}
	go func() { done <- sd.serve(ctx, &http.Server{Handler: mux}, ln, func() { close(draining) }) }()

	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	slow := make(chan string, 1)
	go func() {
		resp, err := fresh.Get(url + "/slow")
		if err != nil {
			slow <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			slow <- err.Error()
			return
		}
		slow <- string(b)
	}()
	<-started
	cancel()
	<-draining
	if resp, err := fresh.Get(url + "/fast"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("new request during the drain delay: %v", err)
	} else {
		resp.Body.Close()
	}
	testkit.WaitFor(t, "new connections refused", wait, func() bool {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-done:
		t.Fatalf("serve returned before the in-flight request finished: %v", err)
	default:
	}
	close(release)
	if got := <-slow; got != half+"second half" {
		t.Fatalf("in-flight response: %q", got)
	}
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
}

// TestShutdownTimeout: a request still running at the timeout is cut off
// and serve returns nil.
func TestShutdownTimeout(t *testing.T) {
	t.Parallel()
	started, never := make(chan struct{}), make(chan struct{})
	defer close(never)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	sd := shutdown{timeout: 200 * time.Millisecond}
	go func() {
		done <- sd.serve(ctx, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			close(started)
			select {
			case <-never:
			case <-r.Context().Done():
			}
		})}, ln, nil)
	}()
	body := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String())
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		body <- err
	}()
	<-started
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if err := <-body; err == nil {
		t.Fatal("a cut-off response read as complete")
	}
}

// TestMaxConnections: with a cap of one, a second connection is not served
// until the first closes.
func TestMaxConnections(t *testing.T) {
	t.Parallel()
	ln, err := Config{Listen: "127.0.0.1:0", MaxConnections: 1}.listen()
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	request := func(c net.Conn) error {
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err
		}
		buf := make([]byte, 12)
		_, err := io.ReadFull(c, buf)
		return err
	}
	first, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if err := request(first); err != nil {
		t.Fatalf("first connection: %v", err)
	}
	second, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	// The kernel accepts the connection; the server does not read it.
	_ = second.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if err := request(second); err == nil {
		t.Fatal("second connection served while the first is open")
	}
	first.Close()
	_ = second.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 12)
	if _, err := io.ReadFull(second, buf); err != nil || !strings.HasPrefix(string(buf), "HTTP/1.1 200") {
		t.Fatalf("second connection after the first closed: %q %v", buf, err)
	}
}
