// Package connlimit caps the connections a net.Listener hands to a server.
// The control plane's gRPC port is reachable by every pod of the cluster
// before any token is checked, and each HTTP/2 connection costs buffers and
// goroutines on the server; a fixed cap bounds what unauthenticated
// clients can make it allocate. Connections beyond the cap are accepted
// and closed at once rather than left in the kernel's backlog, so a
// refused client fails fast and retries with backoff, and the server keeps
// accepting as soon as a slot frees.
package connlimit

import (
	"net"
	"sync"
)

// Listener is a net.Listener that hands out at most a fixed number of
// open connections.
type Listener struct {
	net.Listener
	slots   chan struct{}
	refused func()
}

// New wraps l so that at most limit accepted connections are open at once
// (limit must be positive). refused, when not nil, is called for each
// connection closed because the cap was reached (a metrics counter).
func New(l net.Listener, limit int, refused func()) *Listener {
	return &Listener{Listener: l, slots: make(chan struct{}, max(limit, 1)), refused: refused}
}

// Accept returns the next connection within the cap; connections over it
// are closed without being returned.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &conn{Conn: c, release: sync.OnceFunc(func() { <-l.slots })}, nil
		default:
			_ = c.Close()
			if l.refused != nil {
				l.refused()
			}
		}
	}
}

// Open is the number of connections currently counted against the cap.
func (l *Listener) Open() int { return len(l.slots) }

// conn frees its slot on the first Close.
type conn struct {
	net.Conn
	release func()
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}
