// Package relay is the forwarder's data path: one TCP listener on the
// node's loopback per edge Service, on that Service's node port, and every
// accepted connection copied byte for byte to the Service's ClusterIP and
// port. It never reads what it copies: io.Copy between two *net.TCPConn
// uses splice(2) on Linux, so blob bodies pass through the kernel without
// a user-space buffer; a half-close on one side is passed on with
// CloseWrite.
//
// It listens only on the node ports it is given and dials only the
// targets it is given (the edge Services' ClusterIPs); what those are is
// decided by package edgesvc.
package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Route is one edge Service: connections to Host:Port are copied to
// Target.
type Route struct {
	// Name is "namespace/name" of the Service, for logs and status.
	Name string
	// Port is the Service's node port, listened on at the relay's host.
	Port int
	// Target is the Service's ClusterIP and port.
	Target netip.AddrPort
}

// DialFunc opens the connection to a route's target.
type DialFunc func(ctx context.Context, target netip.AddrPort) (*net.TCPConn, error)

// Options configure a Relay.
type Options struct {
	// Host is the address listened on; default 127.0.0.1, the address the
	// injector writes into pods.
	Host netip.Addr
	// Dial opens a connection to a target; default a net.Dialer with
	// DialTimeout. Tests map ClusterIPs to loopback listeners with it.
	Dial DialFunc
	// DialTimeout bounds dialing a target; default 10 s.
	DialTimeout time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Relay holds the listeners. Its methods are safe for concurrent use.
type Relay struct {
	host netip.Addr
	dial DialFunc
	log  *slog.Logger

	mu     sync.Mutex
	ports  map[int]*port
	conns  map[*net.TCPConn]struct{}
	closed bool
	wg     sync.WaitGroup // accept loops and copies

	probeMu sync.Mutex // one probe at a time
	active  atomic.Int64
}

// port is one listener and the route it serves. ln is nil while the
// port could not be bound (bindErr says why): something else holds it,
// for example kube-proxy's own loopback NodePort proxy.
type port struct {
	route   atomic.Pointer[Route]
	ln      *net.TCPListener
	bindErr error
	// probe, while a probe of this port is in flight, receives the
	// remote address of every accepted connection.
	probe atomic.Pointer[chan netip.AddrPort]
}

// New is a Relay with no listeners; Set opens them.
func New(o Options) *Relay {
	if !o.Host.IsValid() {
		o.Host = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Dial == nil {
		d := &net.Dialer{Timeout: o.DialTimeout}
		o.Dial = func(ctx context.Context, target netip.AddrPort) (*net.TCPConn, error) {
			c, err := d.DialContext(ctx, "tcp", target.String())
			if err != nil {
				return nil, err
			}
			return c.(*net.TCPConn), nil
		}
	}
	return &Relay{host: o.Host, dial: o.Dial, log: o.Logger, ports: map[int]*port{}, conns: map[*net.TCPConn]struct{}{}}
}

// Set makes the listeners equal to routes: a new port is bound, a port
// no route names any more is closed (its open connections finish), a
// changed target applies to the next connection, and a port that could
// not be bound before is tried again. Routes with the same port: the
// first wins. A port that cannot be bound is not an error of Set; Status
// reports it.
func (r *Relay) Set(routes []Route) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	want := map[int]Route{}
	for _, rt := range routes {
		if _, dup := want[rt.Port]; dup {
			r.log.Warn("two edge Services on one node port; keeping the first", "port", rt.Port, "service", rt.Name)
			continue
		}
		want[rt.Port] = rt
	}
	for n, p := range r.ports {
		if _, ok := want[n]; !ok {
			if p.ln != nil {
				_ = p.ln.Close()
			}
			delete(r.ports, n)
			r.log.Info("stopped forwarding", "port", n, "service", p.route.Load().Name)
		}
	}
	for n, rt := range want {
		p := r.ports[n]
		if p == nil {
			p = &port{}
			r.ports[n] = p
		}
		if old := p.route.Swap(&rt); old == nil || *old != rt {
			r.log.Info("forwarding", "port", n, "service", rt.Name, "target", rt.Target.String())
		}
		if p.ln == nil {
			r.bind(n, p)
		}
	}
}

// bind opens port n's listener and starts its accept loop; r.mu is held.
func (r *Relay) bind(n int, p *port) {
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(r.host, uint16(n))))
	if err != nil {
		if p.bindErr == nil || p.bindErr.Error() != err.Error() {
			r.log.Warn("cannot listen on the node port; something else holds it", "port", n, "err", err)
		}
		p.bindErr = err
		return
	}
	p.ln, p.bindErr = ln, nil
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.accept(ln, p)
	}()
}

// accept serves ln until it is closed.
func (r *Relay) accept(ln *net.TCPListener, p *port) {
	backoff := 5 * time.Millisecond
	for {
		c, err := ln.AcceptTCP()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// EMFILE and friends: wait instead of spinning.
			r.log.Warn("accept", "port", ln.Addr().String(), "err", err)
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		if ch := p.probe.Load(); ch != nil {
			select {
			case *ch <- c.RemoteAddr().(*net.TCPAddr).AddrPort():
			default:
			}
		}
		if !r.track(c) {
			_ = c.Close()
			return
		}
		rt := *p.route.Load()
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer r.untrack(c)
			r.serve(c, rt)
		}()
	}
}

// track records an open client connection so Close can end it; false
// once the relay is closed.
func (r *Relay) track(c *net.TCPConn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.conns[c] = struct{}{}
	r.active.Add(1)
	return true
}

func (r *Relay) untrack(c *net.TCPConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.conns, c)
	r.active.Add(-1)
}

// serve copies c to rt's target and back until both directions end.
func (r *Relay) serve(c *net.TCPConn, rt Route) {
	defer func() { _ = c.Close() }()
	// The dial is bounded by the dialer's timeout; the relay's lifetime
	// is Close, which closes c.
	up, err := r.dial(context.Background(), rt.Target)
	if err != nil {
		r.log.Warn("dial the edge Service", "service", rt.Name, "target", rt.Target.String(), "err", err)
		return
	}
	defer func() { _ = up.Close() }()
	sent, received, err := Pipe(c, up)
	if err != nil {
		r.log.Debug("connection ended with an error", "service", rt.Name, "sent", sent, "received", received, "err", err)
	}
}

// Pipe copies a to b and b to a until both directions end, passing a
// half-close on with CloseWrite, and returns the bytes copied each way.
// When one direction fails both connections are closed, so the other
// direction ends too. io.Copy between two *net.TCPConn splices.
func Pipe(a, b *net.TCPConn) (aToB, bToA int64, err error) {
	type result struct {
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := io.Copy(b, a)
		if err == nil {
			err = b.CloseWrite()
		}
		if err != nil {
			_ = a.Close()
			_ = b.Close()
		}
		done <- result{n, err}
	}()
	bToA, errB := io.Copy(a, b)
	if errB == nil {
		errB = a.CloseWrite()
	}
	if errB != nil {
		_ = a.Close()
		_ = b.Close()
	}
	res := <-done
	if res.err != nil {
		return res.n, bToA, fmt.Errorf("copy to the edge: %w", res.err)
	}
	if errB != nil {
		return res.n, bToA, fmt.Errorf("copy from the edge: %w", errB)
	}
	return res.n, bToA, nil
}

// PortStatus is one route's listener.
type PortStatus struct {
	Route Route
	// Listening is true while the relay holds the port.
	Listening bool
	// BindError is why it does not ("" while listening).
	BindError string
}

// Status is every route's listener, by port.
func (r *Relay) Status() []PortStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]PortStatus, 0, len(r.ports))
	for _, p := range r.ports {
		s := PortStatus{Route: *p.route.Load(), Listening: p.ln != nil}
		if p.bindErr != nil {
			s.BindError = p.bindErr.Error()
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b PortStatus) int { return a.Route.Port - b.Route.Port })
	return out
}

// Active is the number of connections being forwarded.
func (r *Relay) Active() int64 { return r.active.Load() }

// Close stops every listener and waits until the open connections end or
// ctx does; then it closes them. Set does nothing afterwards.
func (r *Relay) Close(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	for _, p := range r.ports {
		if p.ln != nil {
			_ = p.ln.Close()
		}
	}
	r.mu.Unlock()
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	r.mu.Lock()
	n := len(r.conns)
	for c := range r.conns {
		_ = c.Close()
	}
	r.mu.Unlock()
	<-done
	return fmt.Errorf("close the relay: %d connections cut: %w", n, ctx.Err())
}
