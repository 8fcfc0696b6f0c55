package testkit

import (
	"fmt"
	"net"
	"testing"
)

// FreePort returns a 127.0.0.1 TCP port that was free a moment ago.
// Another process may take it before the caller binds it: a server
// started on it should be retried with a new port when that happens
// (test/harness does). Where the code under test accepts a listener,
// pass it a net.Listen("tcp", "127.0.0.1:0") instead.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := FreePortErr()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// FreeAddr is FreePort as "127.0.0.1:port".
func FreeAddr(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", FreePort(t))
}

// FreePortErr is FreePort for code without a testing.TB (test/harness's
// retry loop).
func FreePortErr() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
