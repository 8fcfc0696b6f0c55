package testkit

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"
)

// ServePipe serves h over an in-memory network (net.Pipe) until the test
// ends and returns a dialer for clients: every address reaches h. Unlike
// httptest.NewServer it never touches a socket, so inside a
// testing/synctest bubble its connections block durably and the bubble's
// fake clock can advance past token TTLs and timeouts. Call it inside the
// bubble.
func ServePipe(t testing.TB, h http.Handler) func(ctx context.Context, network, addr string) (net.Conn, error) {
	t.Helper()
	l := &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
	srv := &http.Server{Handler: h}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		_ = srv.Close() // closes l and every connection
		<-served
	})
	return l.dial
}

// pipeListener hands the server ends of net.Pipe connections to Serve.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

var errPipeClosed = errors.New("testkit: pipe listener closed")

func (l *pipeListener) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
		return nil, errPipeClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, errPipeClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }
