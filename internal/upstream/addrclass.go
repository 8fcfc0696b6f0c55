package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
)

// addrClass orders addresses from the most external to the most internal.
type addrClass int

const (
	classPublic    addrClass = iota
	classPrivate             // RFC 1918, fc00::/7 (ULA), 100.64.0.0/10 (CGNAT)
	classLinkLocal           // 169.254.0.0/16 (cloud metadata), fe80::/10
	classLoopback            // 127.0.0.0/8, ::1, and the unspecified address
)

func (c addrClass) String() string {
	return [...]string{"public", "private", "link-local", "loopback"}[c]
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

func classOf(ip netip.Addr) addrClass {
	ip = ip.Unmap()
	switch {
	case ip.IsLoopback(), ip.IsUnspecified():
		return classLoopback
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return classLinkLocal
	case ip.IsPrivate(), cgnat.Contains(ip):
		return classPrivate
	}
	return classPublic
}

// ErrInternalAddress is returned for a connection to a host other than the
// upstream's own (a redirect target, a token realm) whose address is more
// internal than the upstream's: an upstream on the internet may not send
// the edge to loopback, to the cloud metadata service or into the private
// network.
var ErrInternalAddress = errors.New("refusing to connect to a more internal address than the upstream's own")

// addrGuard enforces that rule for one upstream. Connections to the
// upstream's own host are never restricted; they teach the guard the
// upstream's class (the most internal address it was reached at).
type addrGuard struct {
	host string // the upstream's host name or IP, without port

	mu    sync.Mutex
	known bool
	class addrClass
}

func newAddrGuard(hostport string) *addrGuard {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	g := &addrGuard{host: host}
	if ip, err := netip.ParseAddr(host); err == nil {
		g.known, g.class = true, classOf(ip)
	} else if strings.EqualFold(host, "localhost") {
		g.known, g.class = true, classLoopback
	}
	return g
}

func (g *addrGuard) own(host string) bool {
	return strings.EqualFold(strings.Trim(host, "[]"), g.host)
}

func (g *addrGuard) learn(c addrClass) {
	g.mu.Lock()
	if !g.known || c > g.class {
		g.known, g.class = true, c
	}
	g.mu.Unlock()
}

// allowed returns the most internal class other hosts may have. While the
// upstream's class is unknown (no connection to it yet), its name is
// resolved.
func (g *addrGuard) allowed(ctx context.Context) addrClass {
	g.mu.Lock()
	known, c := g.known, g.class
	g.mu.Unlock()
	if known {
		return c
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", g.host)
	if err != nil {
		return classPublic
	}
	for _, ip := range ips {
		g.learn(classOf(ip))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.class
}

// check refuses ip for a connection to another host than the upstream's.
func (g *addrGuard) check(ctx context.Context, host string, ip netip.Addr) error {
	if c, allowed := classOf(ip), g.allowed(ctx); c > allowed {
		return fmt.Errorf("%w: %s is %s (%s), the upstream %s is %s", ErrInternalAddress, host, ip, c, g.host, allowed)
	}
	return nil
}

type guardHostKey struct{}

// control is the net.Dialer hook of direct connections: it sees the IP
// really connected to, so a name that resolves differently on the second
// lookup cannot slip through.
func (g *addrGuard) control(ctx context.Context, _, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil
	}
	host, _ := ctx.Value(guardHostKey{}).(string)
	if host == "" || g.own(host) {
		g.learn(classOf(ap.Addr()))
		return nil
	}
	return g.check(ctx, host, ap.Addr())
}

// wrap returns the DialContext of the client's transport. direct says next
// dials itself with control installed; through a proxy node the address is
// resolved at the far end, so only IP literals (and localhost) can be
// checked here.
func (g *addrGuard) wrap(next DialContextFunc, direct bool) DialContextFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		if !direct && !g.own(host) {
			ip, perr := netip.ParseAddr(strings.Trim(host, "[]"))
			if strings.EqualFold(host, "localhost") {
				ip, perr = netip.IPv6Loopback(), nil
			}
			if perr == nil {
				if err := g.check(ctx, host, ip); err != nil {
					return nil, err
				}
			}
		}
		return next(context.WithValue(ctx, guardHostKey{}, host), network, addr)
	}
}
