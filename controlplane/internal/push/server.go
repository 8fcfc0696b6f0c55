// Package push is the control plane's side of the config stream
// (selfhost.v1.ConfigDiscoveryService, docs/control-protocol.md), modelled on
// xDS state-of-the-world: an edge says hello, receives its namespace's full
// EdgeConfig with a fresh nonce, and ACKs or NACKs it by nonce.
//
// Committed configurations arrive through ConfigChanged; a debouncer
// (Run) coalesces bursts and wakes only the connections whose namespace's
// version changed. Each connection has its own loop goroutine and a
// one-slot wake-up mailbox: the loop always sends the latest snapshot, so a
// slow edge never blocks the pusher or other edges and skips intermediate
// versions. The loop handles the edge's requests (ACKs, stats) before
// pushes.
package push

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/snapshot"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// Defaults of the Options.
const (
	DefaultDebounce         = 50 * time.Millisecond
	DefaultMaxDebounce      = 1 * time.Second
	DefaultHelloTimeout     = 10 * time.Second
	DefaultMaxInvalidations = 256
)

// Option configures a Server.
type Option func(*options)

type options struct {
	debounce, maxDebounce, helloTimeout time.Duration
	maxInvalidations                    int
	proxyFailures                       ProxyFailures
	observer                            Observer
}

// Observer is told about edges and their configurations, for metrics
// (package metrics). Its methods must not block: they run on the edges'
// streams.
type Observer interface {
	EdgeConnected(namespace string)
	EdgeDisconnected(namespace string)
	// ConfigSent: a configuration version went to an edge of namespace.
	ConfigSent(namespace string)
	// ConfigAnswered: an edge ACKed (accepted) or NACKed a configuration;
	// detail is the NACK's error text, which may name values: the
	// observer must not export it as is.
	ConfigAnswered(namespace string, accepted bool, detail string)
}

// WithObserver sets who is told about connections, pushes and answers.
func WithObserver(o Observer) Option { return func(opts *options) { opts.observer = o } }

type nopObserver struct{}

func (nopObserver) EdgeConnected(string)                {}
func (nopObserver) EdgeDisconnected(string)             {}
func (nopObserver) ConfigSent(string)                   {}
func (nopObserver) ConfigAnswered(string, bool, string) {}

// ProxyFailures takes edges' reports that dialing through a proxy node
// failed (clash.Manager). It must not block: it runs on the edge's
// stream.
type ProxyFailures interface {
	ReportProxyFailure(namespace, pod string, f *selfhostv1.ProxyFailure)
}

// WithProxyFailures sets where edges' proxy failure reports go; without
// it they are logged and dropped.
func WithProxyFailures(h ProxyFailures) Option { return func(o *options) { o.proxyFailures = h } }

// WithDebounce sets the quiet period after a change before it is pushed;
// every further change restarts it, up to WithMaxDebounce. Zero pushes
// each change at once.
func WithDebounce(d time.Duration) Option { return func(o *options) { o.debounce = d } }

// WithMaxDebounce bounds how long a steady stream of changes can delay a
// push.
func WithMaxDebounce(d time.Duration) Option { return func(o *options) { o.maxDebounce = d } }

// WithHelloTimeout bounds the wait for an edge's first message.
func WithHelloTimeout(d time.Duration) Option { return func(o *options) { o.helloTimeout = d } }

// WithMaxInvalidations bounds the invalidations queued for one edge.
func WithMaxInvalidations(n int) Option { return func(o *options) { o.maxInvalidations = n } }

// Server implements selfhostv1.ConfigDiscoveryServiceServer.
type Server struct {
	selfhostv1.UnimplementedConfigDiscoveryServiceServer

	log  *slog.Logger
	opts options

	current atomic.Pointer[snapshot.Set] // what connections are served
	pending atomic.Pointer[snapshot.Set] // latest committed, not yet published
	kick    chan struct{}                // cap 1: a commit is pending
	done    chan struct{}                // closed when Run stops
	running atomic.Bool

	mu    sync.RWMutex
	byNS  map[string]map[*conn]struct{}
	conns int

	bootID      string
	nonces      atomic.Uint64
	connIDs     atomic.Uint64
	publishes   atomic.Uint64
	configsSent atomic.Uint64
}

// New returns a Server serving initial until ConfigChanged says otherwise.
// Run must be running for changes to be pushed.
func New(initial *snapshot.Set, log *slog.Logger, opts ...Option) *Server {
	o := options{
		debounce:         DefaultDebounce,
		maxDebounce:      DefaultMaxDebounce,
		helloTimeout:     DefaultHelloTimeout,
		maxInvalidations: DefaultMaxInvalidations,
		observer:         nopObserver{},
	}
	for _, opt := range opts {
		opt(&o)
	}
	if o.observer == nil {
		o.observer = nopObserver{}
	}
	o.maxDebounce = max(o.maxDebounce, o.debounce)
	var boot [4]byte
	_, _ = rand.Read(boot[:]) // never fails (crypto/rand panics instead)
	s := &Server{
		log:    log,
		opts:   o,
		kick:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		byNS:   map[string]map[*conn]struct{}{},
		bootID: hex.EncodeToString(boot[:]),
	}
	s.current.Store(initial)
	s.pending.Store(initial)
	return s
}

// Stats are counters for tests and benchmarks.
type Stats struct {
	// Publishes counts debounced pushes of a new Set.
	Publishes uint64
	// ConfigsSent counts EdgeConfig messages sent on all streams.
	ConfigsSent uint64
	// Connected is the number of edges connected now.
	Connected int
	// Version is the version of the Set being served.
	Version string
}

// Stats returns the current counters.
func (s *Server) Stats() Stats {
	s.mu.RLock()
	n := s.conns
	s.mu.RUnlock()
	return Stats{Publishes: s.publishes.Load(), ConfigsSent: s.configsSent.Load(), Connected: n, Version: s.current.Load().Version}
}

// Edges returns the status of the connected edges of namespace (all when
// empty), sorted by namespace, pod and connection time.
func (s *Server) Edges(namespace string) []*selfhostv1.EdgeStatus {
	s.mu.RLock()
	var conns []*conn
	for ns, set := range s.byNS {
		if namespace == "" || ns == namespace {
			for c := range set {
				conns = append(conns, c)
			}
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(conns, func(a, b *conn) int {
		return cmp.Or(cmp.Compare(a.ns, b.ns), cmp.Compare(a.pod, b.pod), a.since.Compare(b.since), cmp.Compare(a.id, b.id))
	})
	out := make([]*selfhostv1.EdgeStatus, len(conns))
	for i, c := range conns {
		out[i] = c.status()
	}
	return out
}

// EdgeAddress returns the address the most recently connected edge of
// namespace reported in its hello, or "". A wildcard address ("[::]:5000",
// an edge that reports the address it bound) is shown in ListEdges but
// never returned: no node can pull from it.
func (s *Server) EdgeAddress(namespace string) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var best *conn
	for c := range s.byNS[namespace] {
		if !pullable(c.address) {
			continue
		}
		if best == nil || c.since.After(best.since) || (c.since.Equal(best.since) && c.id > best.id) {
			best = c
		}
	}
	if best == nil {
		return ""
	}
	return best.address
}

// InvalidateTag queues tag for every connected edge of namespace and
// returns how many edges it was queued for. An edge whose queue is full is
// skipped (and not counted) rather than letting memory grow.
func (s *Server) InvalidateTag(namespace string, tag *selfhostv1.InvalidateTag) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for c := range s.byNS[namespace] {
		if c.enqueueInvalidation(tag, s.opts.maxInvalidations) {
			n++
		} else {
			s.log.Warn("invalidation queue full; edge skipped", "namespace", namespace, "pod", c.pod)
		}
	}
	return n
}

func (s *Server) register(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.byNS[c.ns]
	if set == nil {
		set = map[*conn]struct{}{}
		s.byNS[c.ns] = set
	}
	set[c] = struct{}{}
	s.conns++
	s.opts.observer.EdgeConnected(c.ns)
}

func (s *Server) unregister(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byNS[c.ns], c)
	if len(s.byNS[c.ns]) == 0 {
		delete(s.byNS, c.ns)
	}
	s.conns--
	s.opts.observer.EdgeDisconnected(c.ns)
}

// pullable tells whether addr can be written into an image reference:
// set, and not an unspecified IP such as 0.0.0.0 or ::.
func pullable(addr string) bool {
	if addr == "" {
		return false
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip == nil || !ip.IsUnspecified()
}

// newNonce is unique per send within this process, and across restarts
// thanks to the boot ID, which keeps logs unambiguous.
func (s *Server) newNonce() string {
	return s.bootID + "-" + strconv.FormatUint(s.nonces.Add(1), 10)
}
