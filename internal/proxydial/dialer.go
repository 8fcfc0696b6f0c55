package proxydial

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/clashnode"
)

// ErrAllNodesFailed is returned (wrapped) when no node could carry a
// connection.
var ErrAllNodesFailed = errors.New("every proxy node failed")

// Defaults of a Dialer.
const (
	// DefaultDialTimeout bounds one dial (TCP connect plus the proxy's own
	// handshake) through one node.
	DefaultDialTimeout = 10 * time.Second
	// DefaultFirstByteTimeout bounds the wait for the first byte of a new
	// connection after its first write. A proxy that accepts a connection
	// and then stays silent (a wrong ss password: the server drains what
	// it cannot decrypt, to resist probing) would otherwise hold the
	// request until the client's own, much longer, timeout.
	DefaultFirstByteTimeout = 10 * time.Second
	// DefaultReplayLimit is how many bytes written before the first read
	// are kept to be replayed on the next node. A TLS ClientHello or an
	// HTTP request head is far below it; a connection that writes more
	// before reading is not moved, only reported.
	DefaultReplayLimit = 64 << 10
)

// Dialer dials through an ordered list of nodes with failover. It is safe
// for concurrent use; its DialContext fits upstream.WithDialer and
// http.Transport.DialContext.
type Dialer struct {
	prefix string
	nodes  []*clashnode.Node
	o      options
}

// NewDialer returns a Dialer over nodes in preference order (at least one)
// for the upstream prefix (used in failure reports and logs).
func NewDialer(prefix string, nodes []*clashnode.Node, opts ...Option) (*Dialer, error) {
	if len(nodes) == 0 {
		return nil, errors.New("proxydial: a dialer needs at least one node")
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if o.health == nil {
		o.health = NewHealth(0)
	}
	return &Dialer{prefix: prefix, nodes: append([]*clashnode.Node(nil), nodes...), o: o}, nil
}

// Nodes returns the nodes in preference order.
func (d *Dialer) Nodes() []*clashnode.Node { return append([]*clashnode.Node(nil), d.nodes...) }

// DialContext opens a connection to addr through the first node that
// accepts it, trying the nodes in order (recently failed ones last). The
// returned connection moves itself to the remaining nodes if the proxy
// fails before the destination's first byte arrives.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := clashnode.CheckTarget(network, addr); err != nil {
		return nil, fmt.Errorf("proxydial: %w", err)
	}
	plan := d.o.health.order(d.nodes)
	var errs []string
	for i, n := range plan {
		conn, err := d.dialNode(ctx, n, network, addr)
		if err == nil {
			return newFailoverConn(d, network, addr, n, conn, plan[i+1:]), nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("proxydial: dial %s: %w", addr, ctx.Err())
		}
		errs = append(errs, err.Error())
		if i+1 < len(plan) {
			d.o.observer.FailedOver()
		}
	}
	return nil, fmt.Errorf("proxydial: dial %s: %w: %s", addr, ErrAllNodesFailed, strings.Join(errs, "; "))
}

// dialNode dials addr through n with the per-node timeout and records the
// outcome. A dial cut short by ctx is not the node's fault and is not
// recorded against it.
func (d *Dialer) dialNode(ctx context.Context, n *clashnode.Node, network, addr string) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, d.o.dialTimeout)
	defer cancel()
	conn, err := n.DialContext(dctx, network, addr)
	if err == nil {
		d.o.observer.Dialed(n.Name(), ResultOK)
		return conn, nil
	}
	if ctx.Err() != nil {
		return nil, err
	}
	if dctx.Err() != nil {
		err = fmt.Errorf("dial %s through %s: no answer within %v", addr, n, d.o.dialTimeout)
	}
	d.nodeFailed(n, ResultError, err)
	return nil, err
}

// nodeFailed records and reports one failure of n.
func (d *Dialer) nodeFailed(n *clashnode.Node, result string, err error) {
	d.o.health.MarkFailed(n.Name())
	d.o.observer.Dialed(n.Name(), result)
	msg := n.Redact(err.Error())
	d.o.observer.Failed(Failure{Node: n.Name(), Prefix: d.prefix, Error: msg})
	d.o.log.Warn("proxy node failed", "node", n.Name(), "type", n.Type(), "server", n.Server(),
		"upstream", d.prefix, "result", result, "err", msg)
}

// nodeOK records that n carried a connection.
func (d *Dialer) nodeOK(n *clashnode.Node) { d.o.health.MarkOK(n.Name()) }

// Option configures a Dialer.
type Option func(*options)

type options struct {
	health           *Health
	observer         Observer
	log              *slog.Logger
	dialTimeout      time.Duration
	firstByteTimeout time.Duration
	replayLimit      int
}

func defaultOptions() options {
	return options{
		observer:         nopObserver{},
		log:              slog.New(slog.DiscardHandler),
		dialTimeout:      DefaultDialTimeout,
		firstByteTimeout: DefaultFirstByteTimeout,
		replayLimit:      DefaultReplayLimit,
	}
}

// WithHealth shares the failure memory h (default: one of the dialer's own
// with DefaultFailureMemory).
func WithHealth(h *Health) Option { return func(o *options) { o.health = h } }

// WithObserver sets who counts and reports dials (default: nobody).
func WithObserver(obs Observer) Option {
	return func(o *options) {
		if obs != nil {
			o.observer = obs
		}
	}
}

// WithLogger sets the structured logger (default: discard). Nothing logged
// holds a node's secrets.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

// WithDialTimeout bounds one dial through one node (default
// DefaultDialTimeout).
func WithDialTimeout(t time.Duration) Option {
	return func(o *options) {
		if t > 0 {
			o.dialTimeout = t
		}
	}
}

// WithFirstByteTimeout bounds the wait for a new connection's first byte
// after its first write (default DefaultFirstByteTimeout). It must exceed
// the time the upstream takes to answer its first request.
func WithFirstByteTimeout(t time.Duration) Option {
	return func(o *options) {
		if t > 0 {
			o.firstByteTimeout = t
		}
	}
}
