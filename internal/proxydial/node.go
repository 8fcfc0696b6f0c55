package proxydial

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/metacubex/mihomo/adapter"
	C "github.com/metacubex/mihomo/constant"
)

// ErrInvalidNode marks a Clash node map that cannot be used. Its messages
// never contain the node's secrets.
var ErrInvalidNode = errors.New("invalid proxy node")

// Node is one Clash proxy node, ready to dial. It is safe for concurrent
// use and immutable.
type Node struct {
	name        string
	typ         string
	server      string // host:port of the proxy server, for logs
	fingerprint string // hash of the canonical Clash map
	secrets     []string
	proxy       C.Proxy
	dialer      C.Dialer // nil: the adapter dials its own way
}

// NewNode builds a node from its Clash map, as adapter.ParseProxy takes it
// (the "proxies:" entries of a Clash YAML file). The map must name the
// node and its type.
func NewNode(m map[string]any) (*Node, error) {
	name, _ := m["name"].(string)
	if strings.TrimSpace(name) == "" {
		return nil, fmt.Errorf("%w: the node has no name", ErrInvalidNode)
	}
	typ, _ := m["type"].(string)
	if typ == "" {
		return nil, fmt.Errorf("%w: node %q has no type", ErrInvalidNode, name)
	}
	canon, err := json.Marshal(m) // encoding/json sorts map keys
	if err != nil {
		return nil, fmt.Errorf("%w: node %q: not encodable as JSON", ErrInvalidNode, name)
	}
	secrets := secretsOf(m)
	p, err := adapter.ParseProxy(m)
	if err != nil {
		return nil, fmt.Errorf("%w: node %q (type %s): %s", ErrInvalidNode, name, typ, redact(err.Error(), secrets))
	}
	sum := sha256.Sum256(canon)
	n := &Node{name: name, typ: typ, server: p.Addr(), fingerprint: hex.EncodeToString(sum[:]), secrets: secrets, proxy: p}
	if sw := p.SupportWithDialer(); sw == C.TCP || sw == C.ALLNet {
		n.dialer = dialerFor(typ, m)
	}
	return n, nil
}

// NodeFromJSON builds a node from ProxyNode.clash_json of the control
// protocol. name is ProxyNode.name: it wins over a name in the map, so the
// node is reported under the name the control plane knows it by.
func NodeFromJSON(name, clashJSON string) (*Node, error) {
	var m map[string]any
	if err := json.Unmarshal([]byte(clashJSON), &m); err != nil {
		// The JSON error quotes at most a character of the input.
		return nil, fmt.Errorf("%w: node %q: clash_json is not a JSON object", ErrInvalidNode, name)
	}
	if m == nil {
		return nil, fmt.Errorf("%w: node %q: clash_json is not a JSON object", ErrInvalidNode, name)
	}
	if name != "" {
		m["name"] = name
	}
	return NewNode(m)
}

// Name is the node's name.
func (n *Node) Name() string { return n.name }

// Type is the node's Clash type ("ss", "vmess", "trojan", "socks5", ...).
func (n *Node) Type() string { return n.typ }

// Server is host:port of the proxy server (no secrets).
func (n *Node) Server() string { return n.server }

// Fingerprint identifies the node's complete configuration: two nodes
// with equal fingerprints dial identically.
func (n *Node) Fingerprint() string { return n.fingerprint }

// String names the node for logs.
func (n *Node) String() string { return n.name + " (" + n.typ + " " + n.server + ")" }

// DialContext opens a TCP connection to addr (host:port; host a name or an
// IP literal) through the node. Only the proxy's own handshake happens
// here: with ss, trojan and vmess a destination the proxy cannot reach is
// noticed only on the first read (see Dialer, which handles that).
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
		return nil, fmt.Errorf("dial %s through %s: %s", addr, n, n.redact(err.Error()))
	}
	return conn, nil
}

// metadataFor turns a dial target into mihomo's metadata: an IP literal
// goes as DstIP (the proxy dials it as is), a name as Host (resolved by the
// proxy server, as a browser behind the proxy would have it).
func metadataFor(network, addr string) (*C.Metadata, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("proxydial: network %q is not supported (tcp only)", network)
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("proxydial: address %q: %w", addr, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("proxydial: address %q: bad port", addr)
	}
	if host == "" {
		return nil, fmt.Errorf("proxydial: address %q: empty host", addr)
	}
	md := &C.Metadata{NetWork: C.TCP, Type: C.INNER, DstPort: uint16(port)}
	if ip, err := netip.ParseAddr(host); err == nil {
		md.DstIP = ip.Unmap()
	} else {
		md.Host = host
	}
	return md, nil
}

// secretKeys are the Clash map keys whose values are credentials.
var secretKeys = map[string]bool{
	"password": true, "uuid": true, "username": true, "psk": true, "private-key": true,
	"pre-shared-key": true, "auth": true, "auth-str": true, "auth_str": true, "obfs-password": true,
	"token": true, "public-key": true, "short-id": true, "headers": true,
}

// redact removes the node's credentials from msg.
func (n *Node) redact(msg string) string { return redact(msg, n.secrets) }

// secretsOf lists the credential values of a Clash map, longest first so
// that a secret containing another is replaced whole.
func secretsOf(m map[string]any) []string {
	var secrets []string
	collectSecrets(m, false, &secrets)
	sort.Slice(secrets, func(i, j int) bool { return len(secrets[i]) > len(secrets[j]) })
	return secrets
}

// redact replaces every secret that occurs in msg.
func redact(msg string, secrets []string) string {
	for _, s := range secrets {
		msg = strings.ReplaceAll(msg, s, "[redacted]")
	}
	return msg
}

func collectSecrets(v any, secret bool, out *[]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			collectSecrets(x, secret || secretKeys[strings.ToLower(k)], out)
		}
	case []any:
		for _, x := range v {
			collectSecrets(x, secret, out)
		}
	case string:
		// One- and two-character values would mangle the whole message and
		// are no secret worth the name.
		if secret && len(v) >= 3 {
			*out = append(*out, v)
		}
	case json.Number, float64, int, int64:
		if secret {
			if s := fmt.Sprint(v); len(s) >= 3 {
				*out = append(*out, s)
			}
		}
	}
}
