package clashnode

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	C "github.com/metacubex/mihomo/constant"
)

// DialContext opens a TCP connection to addr (host:port; host a name or an
// IP literal) through the node. Only the proxy's own handshake happens
// here: with ss, trojan and vmess a destination the proxy cannot reach is
// noticed only on the first read (internal/proxydial handles that).
func (n *Node) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	md, err := metadataFor(network, addr)
	if err != nil {
		return nil, err
	}
	var conn net.Conn
	if n.dialer != nil {
		conn, err = n.proxy.DialContextWithDialer(ctx, n.dialer, md)
	} else {
		conn, err = n.proxy.DialContext(ctx, md)
	}
	if err != nil {
		// mihomo's errors name the proxy server and the cause; the
		// redaction is a second line of defence.
		return nil, fmt.Errorf("dial %s through %s: %s", addr, n, n.Redact(err.Error()))
	}
	return conn, nil
}

// URLTest fetches url through the node with a HEAD request; any HTTP
// response means the node carries traffic (a registry's /v2/ answers 401
// without credentials). mihomo sets no deadline of its own: ctx's bounds
// it. The error is redacted.
func (n *Node) URLTest(ctx context.Context, url string) error {
	if _, err := n.proxy.URLTest(ctx, url, nil); err != nil {
		return errors.New(n.Redact(err.Error()))
	}
	if !n.proxy.AliveForTestUrl(url) {
		return errors.New("no response")
	}
	return nil
}

// CheckTarget reports whether DialContext can dial addr over network at
// all (tcp, a host and a port), without dialing.
func CheckTarget(network, addr string) error {
	_, err := metadataFor(network, addr)
	return err
}

// metadataFor turns a dial target into mihomo's metadata: an IP literal
// goes as DstIP (the proxy dials it as is), a name as Host (resolved by the
// proxy server, as a browser behind the proxy would have it).
func metadataFor(network, addr string) (*C.Metadata, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("network %q is not supported (tcp only)", network)
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", addr, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("address %q: bad port", addr)
	}
	if host == "" {
		return nil, fmt.Errorf("address %q: empty host", addr)
	}
	md := &C.Metadata{NetWork: C.TCP, Type: C.INNER, DstPort: uint16(port)}
	if ip, err := netip.ParseAddr(host); err == nil {
		md.DstIP = ip.Unmap()
	} else {
		md.Host = host
	}
	return md, nil
}
