package proxydial

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/clashnode"
)

// errNoFirstByte is the cause recorded when a proxy stays silent.
var errNoFirstByte = errors.New("no response before the first-byte timeout")

// failoverConn is a connection through a node that can still move to the
// next node: until the first byte arrives from the destination, everything
// written is kept, and when the proxy closes, resets or stays silent, the
// connection is redialled through the next node and the bytes are replayed.
// The caller never sees the switch — nothing it received came from the
// failed node. After the first byte it is a plain pass-through.
//
// Read and Write may run concurrently (net/http does), so the switching
// state is under mu; the established fast path reads cur without it (cur
// never changes once established is set).
type failoverConn struct {
	d             *Dialer
	network, addr string
	ctx           context.Context // for redials; cancelled by Close
	cancel        context.CancelFunc
	dialed        time.Time

	established atomic.Bool

	mu         sync.Mutex
	cur        net.Conn
	node       *clashnode.Node
	rest       []*clashnode.Node // nodes still to try, in order
	buf        []byte            // written since the dial, replayed on a switch
	written    bool              // something was written (see idleClose)
	replayable bool              // buf holds everything written (under the replay limit)
	timer      *time.Timer
	closed     bool
	finalErr   error // why the last switch was impossible
	readDL     time.Time
	writeDL    time.Time
}

func newFailoverConn(d *Dialer, network, addr string, n *clashnode.Node, conn net.Conn, rest []*clashnode.Node) *failoverConn {
	ctx, cancel := context.WithCancel(context.Background())
	return &failoverConn{d: d, network: network, addr: addr, ctx: ctx, cancel: cancel, dialed: time.Now(),
		cur: conn, node: n, rest: rest, replayable: true}
}

// Read implements net.Conn.
func (c *failoverConn) Read(p []byte) (int, error) {
	if c.established.Load() {
		return c.cur.Read(p)
	}
	for {
		c.mu.Lock()
		conn := c.cur
		c.mu.Unlock()
		n, err := conn.Read(p)
		if n > 0 {
			if !c.establish(conn) {
				// A switch happened while this read was under way: these
				// bytes answer what the new connection was sent again, so
				// they are dropped and the new connection is read.
				continue
			}
			return n, err
		}
		if err == nil {
			return 0, nil
		}
		if errors.Is(err, os.ErrDeadlineExceeded) || c.idleClose() {
			// The caller's deadline (or TLS interrupting a handshake), or
			// an unused connection timed out by the server: not the
			// node's fault.
			return 0, err
		}
		if !c.failover(conn, err) {
			return 0, c.errOr(err)
		}
	}
}

// Write implements net.Conn.
func (c *failoverConn) Write(p []byte) (int, error) {
	if c.established.Load() {
		return c.cur.Write(p)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	c.written = c.written || len(p) > 0
	if c.replayable {
		if len(c.buf)+len(p) > c.d.o.replayLimit {
			c.replayable, c.buf = false, nil
		} else {
			c.buf = append(c.buf, p...)
		}
	}
	conn := c.cur
	if c.timer == nil {
		c.startTimer(conn)
	}
	c.mu.Unlock()
	n, err := conn.Write(p)
	if err != nil && !c.established.Load() && !errors.Is(err, os.ErrDeadlineExceeded) {
		if c.failover(conn, err) {
			// p is in the replayed bytes (or was written after the switch).
			return len(p), nil
		}
		return n, c.errOr(err)
	}
	return n, err
}

// idleClose reports a close that is no proxy failure: nothing was ever
// written and the connection is older than the first-byte timeout, so the
// peer closed a connection that was dialled but never used (an HTTP
// transport keeps the loser of a dial race idle). A proxy that gives up
// on its destination closes at once, often before the first write (ss
// sends its header at dial time).
func (c *failoverConn) idleClose() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.written && time.Since(c.dialed) >= c.d.o.firstByteTimeout
}

// establish marks conn as the one the caller reads from for good; false
// when conn was replaced in the meantime.
func (c *failoverConn) establish(conn net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != conn {
		return false
	}
	if !c.established.Load() {
		c.established.Store(true)
		c.buf, c.rest = nil, nil
		if c.timer != nil {
			c.timer.Stop()
		}
		c.d.nodeOK(c.node)
	}
	return true
}

// startTimer arms the first-byte timeout for conn. Called with mu held.
func (c *failoverConn) startTimer(conn net.Conn) {
	c.timer = time.AfterFunc(c.d.o.firstByteTimeout, func() {
		c.failover(conn, fmt.Errorf("%w (%v)", errNoFirstByte, c.d.o.firstByteTimeout))
	})
}

// failover replaces failed conn with a connection through the next node
// that accepts it and replays what was written. It returns true when the
// caller should carry on with the current connection (a new one, or one
// another goroutine switched to already), false when no switch is possible.
func (c *failoverConn) failover(conn net.Conn, cause error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.established.Load() || c.finalErr != nil {
		return false
	}
	if c.cur != conn {
		return true
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	failed := c.node
	c.d.nodeFailed(failed, ResultNoResponse,
		fmt.Errorf("connection to %s through %s failed before the first byte: %w", c.addr, failed, cause))
	_ = conn.Close()
	if !c.replayable {
		c.finalErr = fmt.Errorf("proxydial: %s through %s: %w (too much was written to replay it on another node)", c.addr, failed, cause)
		return false
	}
	for len(c.rest) > 0 {
		next := c.rest[0]
		c.rest = c.rest[1:]
		c.d.o.observer.FailedOver()
		nc, err := c.d.dialNode(c.ctx, next, c.network, c.addr)
		if err != nil {
			if c.ctx.Err() != nil {
				break
			}
			continue
		}
		if !c.readDL.IsZero() {
			_ = nc.SetReadDeadline(c.readDL)
		}
		if !c.writeDL.IsZero() {
			_ = nc.SetWriteDeadline(c.writeDL)
		}
		if len(c.buf) > 0 {
			if _, err := nc.Write(c.buf); err != nil {
				c.d.nodeFailed(next, ResultNoResponse, fmt.Errorf("replay to %s through %s: %w", c.addr, next, err))
				_ = nc.Close()
				continue
			}
		}
		c.d.o.log.Info("connection moved to the next proxy node", "upstream", c.d.prefix,
			"addr", c.addr, "from", failed.Name(), "to", next.Name(), "replayed_bytes", len(c.buf))
		c.cur, c.node = nc, next
		c.timer = nil
		if len(c.buf) > 0 {
			c.startTimer(nc)
		}
		return true
	}
	c.finalErr = fmt.Errorf("proxydial: %s: %w (last: %s: %v)", c.addr, ErrAllNodesFailed, failed.Name(), cause)
	return false
}

// errOr returns the reason no switch was possible, else err.
func (c *failoverConn) errOr(err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	if c.finalErr != nil {
		return c.finalErr
	}
	return err
}

// Close implements net.Conn.
func (c *failoverConn) Close() error {
	c.cancel() // first: a switch in progress stops dialing
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if c.timer != nil {
		c.timer.Stop()
	}
	return c.cur.Close()
}

// LocalAddr implements net.Conn.
func (c *failoverConn) LocalAddr() net.Addr { return c.current().LocalAddr() }

// RemoteAddr implements net.Conn.
func (c *failoverConn) RemoteAddr() net.Addr { return c.current().RemoteAddr() }

func (c *failoverConn) current() net.Conn {
	if c.established.Load() {
		return c.cur
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

// SetDeadline implements net.Conn.
func (c *failoverConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readDL, c.writeDL = t, t
	return c.cur.SetDeadline(t)
}

// SetReadDeadline implements net.Conn.
func (c *failoverConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readDL = t
	return c.cur.SetReadDeadline(t)
}

// SetWriteDeadline implements net.Conn.
func (c *failoverConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writeDL = t
	return c.cur.SetWriteDeadline(t)
}
