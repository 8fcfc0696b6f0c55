package clashnode

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/metacubex/mihomo/component/dialer"
	C "github.com/metacubex/mihomo/constant"
)

// readBufferSize is the read buffer between a proxy protocol and its TCP
// connection to the proxy server.
const readBufferSize = 64 << 10

// bufferedTypes are the node types whose plain-TCP transport is dialled
// through a bufferedDialer. Their protocols read small frame headers
// straight from the socket (vmess: a 2-byte length, then the chunk), one
// system call each; a buffer under them roughly doubles vmess throughput
// and changes nothing measurable for the others.
var bufferedTypes = map[string]bool{"ss": true, "vmess": true, "vless": true, "trojan": true, "socks5": true, "http": true}

// bufferedDialer is mihomo's dialer (resolver, interface binding, routing
// mark, TFO, MPTCP) with a read buffer on every connection it makes.
type bufferedDialer struct{ d dialer.Dialer }

var _ C.Dialer = bufferedDialer{}

func (b bufferedDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := b.d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return &bufferedConn{Conn: c, r: bufio.NewReaderSize(c, readBufferSize)}, nil
}

func (b bufferedDialer) ListenPacket(ctx context.Context, network, address string, rAddrPort netip.AddrPort) (net.PacketConn, error) {
	return b.d.ListenPacket(ctx, network, address, rAddrPort)
}

// bufferedConn reads through a bufio.Reader; everything else goes to the
// connection.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// dialerFor returns the buffered dialer for a node's map, or nil when the
// node must dial its own way: a transport other than plain TCP (grpc, ws,
// h2 keep their own connection handling in mihomo's DialContext), smux, a
// dialer-proxy chain, or a type not in bufferedTypes.
func dialerFor(typ string, m map[string]any) C.Dialer {
	if !bufferedTypes[typ] {
		return nil
	}
	if nw, _ := m["network"].(string); nw != "" && nw != "tcp" {
		return nil
	}
	if smux, ok := m["smux"].(map[string]any); ok && smux["enabled"] == true {
		return nil
	}
	if dp, _ := m["dialer-proxy"].(string); dp != "" {
		return nil
	}
	return bufferedDialer{d: dialer.NewDialer(dialOptions(m)...)}
}

// dialOptions are the socket options of a node's map, as mihomo's own
// dialer would take them from the node (outbound.Base.DialOptions).
func dialOptions(m map[string]any) []dialer.Option {
	var opts []dialer.Option
	if iface, _ := m["interface-name"].(string); iface != "" {
		opts = append(opts, dialer.WithInterface(iface))
	}
	if mark := intOf(m["routing-mark"]); mark != 0 {
		opts = append(opts, dialer.WithRoutingMark(mark))
	}
	switch v, _ := m["ip-version"].(string); strings.ToLower(v) {
	case "ipv4":
		opts = append(opts, dialer.WithOnlySingleStack(true))
	case "ipv6":
		opts = append(opts, dialer.WithOnlySingleStack(false))
	case "ipv4-prefer":
		opts = append(opts, dialer.WithPreferIPv4())
	case "ipv6-prefer":
		opts = append(opts, dialer.WithPreferIPv6())
	}
	if tfo, _ := m["tfo"].(bool); tfo {
		opts = append(opts, dialer.WithTFO(true))
	}
	if mptcp, _ := m["mptcp"].(bool); mptcp {
		opts = append(opts, dialer.WithMPTCP(true))
	}
	return opts
}

// intOf reads a number of a decoded map (JSON gives float64, YAML int).
func intOf(v any) int {
	switch n := v.(type) {
	case int:
		return n
	case int64:
		return int(n)
	case float64:
		return int(n)
	case string:
		var i int
		_, _ = fmt.Sscan(n, &i)
		return i
	}
	return 0
}
