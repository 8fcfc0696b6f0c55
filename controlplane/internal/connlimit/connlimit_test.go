package connlimit_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/connlimit"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
)

// accepted runs Accept in a loop and hands out what it returns.
func accepted(t *testing.T, l net.Listener) <-chan net.Conn {
	t.Helper()
	out := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(out)
				return
			}
			out <- c
		}
	}()
	return out
}

// closedByPeer reports whether the server closed c: a read ends with EOF
// or a reset instead of waiting.
func closedByPeer(t *testing.T, c net.Conn) bool {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return err != nil
}

func TestListenerCapsOpenConnections(t *testing.T) {
	t.Parallel()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var refused atomic.Int64
	l := connlimit.New(inner, 2, func() { refused.Add(1) })
	t.Cleanup(func() { _ = l.Close() })
	conns := accepted(t, l)
	dial := func() net.Conn {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}

	tests := []struct {
		name        string
		over        bool
		wantRefused int64
		wantOpen    int
	}{
		{"first within the cap", false, 0, 1},
		{"second within the cap", false, 0, 2},
		{"third over the cap", true, 1, 2},
		{"fourth over the cap", true, 2, 2},
	}
	var server []net.Conn
	for _, tt := range tests {
		c := dial()
		if tt.over {
			if !closedByPeer(t, c) {
				t.Fatalf("%s: connection over the cap was not closed", tt.name)
			}
		} else {
			server = append(server, <-conns)
		}
		// The count follows the close; wait for it.
		testkit.WaitFor(t, tt.name+": the refusal counted", 10*time.Second, func() error {
			if got := refused.Load(); got != tt.wantRefused {
				return fmt.Errorf("refused = %d, want %d", got, tt.wantRefused)
			}
			return nil
		})
		if got := l.Open(); got != tt.wantOpen {
			t.Errorf("%s: open = %d, want %d", tt.name, got, tt.wantOpen)
		}
	}
	// Closing a connection (twice: the second must not free another slot)
	// lets the next one in.
	_ = server[0].Close()
	_ = server[0].Close()
	if got := l.Open(); got != 1 {
		t.Fatalf("open after a close = %d, want 1", got)
	}
	c := dial()
	s := <-conns
	if _, err := s.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("connection after a slot freed: %v", err)
	}
	if got := l.Open(); got != 2 {
		t.Fatalf("open = %d, want 2", got)
	}
}
