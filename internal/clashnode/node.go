package clashnode

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/metacubex/mihomo/adapter"
	C "github.com/metacubex/mihomo/constant"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// MaxJSON bounds one node's Clash map, encoded as JSON.
const MaxJSON = 16 << 10

// Node is one usable Clash proxy node: validated, with its mihomo adapter
// built from exactly the JSON that edges receive. It is immutable and safe
// for concurrent use.
type Node struct {
	name        string
	typ         string
	server      string // host:port of the proxy server (no secrets)
	json        string // canonical Clash map, secrets included
	fingerprint string // hash of json
	redactor    Redactor
	proxy       C.Proxy
	dialer      C.Dialer // nil: the adapter dials its own way
}

// Error says why a node map is unusable; errors.Is(err, ErrInvalid) holds.
// Reason never contains the node's secrets.
type Error struct {
	// Name of the node, when the map had one.
	Name string
	// Reason, without the name: what a list of skipped entries shows.
	Reason string
}

// Error implements error: the node's name and the reason.
func (e *Error) Error() string {
	if e.Name == "" {
		return ErrInvalid.Error() + ": " + e.Reason
	}
	return fmt.Sprintf("%s %q: %s", ErrInvalid, clip(e.Name, 128), e.Reason)
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// notProxies are Clash types that are valid in a Clash config but do not
// carry traffic anywhere useful.
var notProxies = []string{"direct", "reject", "reject-drop", "dns", "pass", "compatible", "relay", "selector", "url-test", "fallback", "load-balance"}

// New validates one Clash proxy map (an entry of a Clash file's proxies:
// list, as adapter.ParseProxy takes it) and builds its adapter. The error
// is an *Error, scrubbed of the map's secrets.
func New(m map[string]any) (*Node, error) {
	Setup()
	r := NewRedactor(m)
	n, err := build(m, r)
	if err != nil {
		name, _ := m["name"].(string)
		return nil, &Error{Name: name, Reason: r.Redact(err.Error())}
	}
	return n, nil
}

// FromJSON builds a node from ProxyNode.clash_json of the control
// protocol. name is ProxyNode.name: it wins over a name in the map, so the
// node is known under the name the control plane gave it.
func FromJSON(name, clashJSON string) (*Node, error) {
	var m map[string]any
	if err := json.Unmarshal([]byte(clashJSON), &m); err != nil || m == nil {
		// The JSON error would quote the input, secrets included.
		return nil, &Error{Name: name, Reason: "clash_json is not a JSON object"}
	}
	if name != "" {
		m["name"] = name
	}
	return New(m)
}

// FromProto builds the node an edge receives; a type that differs from
// the map's is an error.
func FromProto(pn *selfhostv1.ProxyNode) (*Node, error) {
	n, err := FromJSON(pn.GetName(), pn.GetClashJson())
	if err == nil && pn.GetType() != "" && !strings.EqualFold(pn.GetType(), n.Type()) {
		n.Close()
		return nil, &Error{Name: pn.GetName(), Reason: fmt.Sprintf("type %q differs from the type %q of clash_json", pn.GetType(), n.Type())}
	}
	return n, err
}

// Proto is the node as an edge receives it.
func (n *Node) Proto() *selfhostv1.ProxyNode {
	return &selfhostv1.ProxyNode{Name: n.name, Type: n.typ, ClashJson: n.json}
}

// Name is the node's name, unique among the nodes of one pool.
func (n *Node) Name() string { return n.name }

// Type is the node's Clash type ("ss", "vmess", "trojan", "socks5", ...).
func (n *Node) Type() string { return n.typ }

// Server is host:port of the proxy server (no secrets).
func (n *Node) Server() string { return n.server }

// JSON is the node's Clash map as canonical JSON (sorted keys). It holds
// the node's secrets: it goes to edges and nowhere else.
func (n *Node) JSON() string { return n.json }

// Fingerprint identifies the node's complete configuration, name
// included: two nodes with equal fingerprints dial identically.
func (n *Node) Fingerprint() string { return n.fingerprint }

// String names the node for logs.
func (n *Node) String() string { return n.name + " (" + n.typ + " " + n.server + ")" }

// Redact replaces the node's secret values in s.
func (n *Node) Redact(s string) string { return n.redactor.Redact(s) }

// Close releases the adapter's resources (a multiplexed session, say).
func (n *Node) Close() { _ = n.proxy.Close() }

func build(m map[string]any, r Redactor) (n *Node, err error) {
	name, _ := m["name"].(string)
	if strings.TrimSpace(name) == "" {
		return nil, errors.New("name: must not be empty")
	}
	typ, ok := m["type"].(string)
	switch {
	case !ok || typ == "":
		return nil, errors.New("missing type")
	case slices.Contains(notProxies, strings.ToLower(typ)):
		return nil, fmt.Errorf("type %q is not a proxy", typ)
	}
	if s, ok := m["server"].(string); !ok || strings.TrimSpace(s) == "" {
		return nil, errors.New("missing server")
	}
	if err := checkPort(m["port"]); err != nil {
		return nil, err
	}
	if d, _ := m["dialer-proxy"].(string); d != "" {
		return nil, errors.New("dialer-proxy (a chain through another node) is not supported")
	}
	raw, err := json.Marshal(m) // encoding/json sorts map keys: canonical
	if err != nil {
		return nil, fmt.Errorf("not a plain map of values: %w", err)
	}
	if len(raw) > MaxJSON {
		return nil, fmt.Errorf("larger than %d bytes", MaxJSON)
	}
	// The adapter is built from the JSON, decoded the way an edge decodes
	// it, so a node that passes here also passes at the edge.
	var decoded map[string]any
	if err := json.Unmarshal(raw, &decoded); err != nil {
		return nil, fmt.Errorf("does not survive JSON: %w", err)
	}
	defer func() {
		if p := recover(); p != nil {
			n, err = nil, fmt.Errorf("mihomo's parser panicked: %v", p)
		}
	}()
	p, err := adapter.ParseProxy(decoded)
	if err != nil {
		return nil, fmt.Errorf("type %s: %w", typ, err)
	}
	sum := sha256.Sum256(raw)
	n = &Node{name: name, typ: typ, server: p.Addr(), json: string(raw), fingerprint: hex.EncodeToString(sum[:]), redactor: r, proxy: p}
	if sw := p.SupportWithDialer(); sw == C.TCP || sw == C.ALLNet {
		n.dialer = dialerFor(typ, decoded)
	}
	return n, nil
}

// checkPort wants an integer 1–65535, as a number or a decimal string.
func checkPort(v any) error {
	var p float64
	switch x := v.(type) {
	case nil:
		return errors.New("missing port")
	case int:
		p = float64(x)
	case int64:
		p = float64(x)
	case uint64:
		p = float64(x)
	case float64:
		p = x
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return errors.New("port is not a number")
		}
		p = f
	case string:
		i, err := strconv.Atoi(strings.TrimSpace(x))
		if err != nil {
			return errors.New("port is not a number")
		}
		p = float64(i)
	default:
		return fmt.Errorf("port is a %T, not a number", v)
	}
	if p != math.Trunc(p) || p < 1 || p > 65535 {
		return fmt.Errorf("port %v is not between 1 and 65535", p)
	}
	return nil
}

// clip shortens s to at most n bytes on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
