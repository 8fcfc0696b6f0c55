package clash

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/metacubex/mihomo/adapter"
	C "github.com/metacubex/mihomo/constant"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// MaxNodeJSON bounds one node's Clash map, encoded as JSON.
const MaxNodeJSON = 16 << 10

// Node is one usable Clash node: validated by mihomo's parser, with the
// adapter built from exactly the JSON that edges receive. A Node is
// immutable.
type Node struct {
	// Name is unique in the pool.
	Name string
	// Type is the Clash type ("ss", "vmess", "trojan", "socks5", ...).
	Type string
	// Server is host:port.
	Server string
	// JSON is the node's Clash map as JSON. It holds the node's secrets:
	// it goes to edges and nowhere else.
	JSON string

	secrets []string // values to scrub from any text about this node
	proxy   C.Proxy  // nil for nodes made by tests without mihomo
}

// Proto is the node as an edge receives it.
func (n *Node) Proto() *selfhostv1.ProxyNode {
	return &selfhostv1.ProxyNode{Name: n.Name, Type: n.Type, ClashJson: n.JSON}
}

// Scrub replaces the node's secret values in s.
func (n *Node) Scrub(s string) string { return scrub(s, n.secrets) }

// sameAs tells whether m is the same node (name and map), so its health
// history carries over a refresh.
func (n *Node) sameAs(m *Node) bool { return n.Name == m.Name && n.JSON == m.JSON }

// close releases the adapter's resources (a multiplexed session, say).
func (n *Node) close() {
	if n.proxy != nil {
		_ = n.proxy.Close()
	}
}

// notProxies are Clash types that are valid in a config but do not carry
// traffic anywhere useful for an edge.
var notProxies = []string{"direct", "reject", "reject-drop", "dns", "pass", "compatible", "relay", "selector", "url-test", "fallback", "load-balance"}

// NewNode validates one Clash proxy map and builds its adapter. The error
// says what is wrong, scrubbed of the map's secrets.
func NewNode(m map[string]any) (*Node, error) {
	ConfigureMihomo()
	secrets := secretValues(m)
	n, err := newNode(m, secrets)
	if err != nil {
		return nil, errors.New(scrub(err.Error(), secrets))
	}
	return n, nil
}

func newNode(m map[string]any, secrets []string) (n *Node, err error) {
	name, _ := m["name"].(string)
	if err := config.CheckNodeName(name); err != nil {
		return nil, fmt.Errorf("name: %w", err)
	}
	if config.IsReservedNodeName(name) {
		return nil, fmt.Errorf("name %q is reserved (it means something else in upstream.proxy)", name)
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
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("not a plain map of values: %w", err)
	}
	if len(raw) > MaxNodeJSON {
		return nil, fmt.Errorf("larger than %d bytes", MaxNodeJSON)
	}
	// The adapter is built from the JSON, decoded the way an edge decodes
	// it, so a node that passes here also passes at the edge.
	var decoded map[string]any
	if err := json.Unmarshal(raw, &decoded); err != nil {
		return nil, fmt.Errorf("does not survive JSON: %w", err)
	}
	defer func() {
		if r := recover(); r != nil {
			n, err = nil, fmt.Errorf("mihomo's parser panicked: %v", r)
		}
	}()
	p, err := adapter.ParseProxy(decoded)
	if err != nil {
		return nil, err
	}
	return &Node{Name: name, Type: typ, Server: p.Addr(), JSON: string(raw), secrets: secrets, proxy: p}, nil
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

// secretKeys name map entries whose values are secrets, at any depth
// (plugin-opts, reality-opts, ...).
var secretKeys = map[string]bool{
	"password": true, "uuid": true, "auth": true, "auth-str": true, "auth_str": true,
	"private-key": true, "pre-shared-key": true, "psk": true, "token": true,
	"obfs-password": true, "username": true, "short-id": true, "protocol-param": true,
	"obfs-param": true, "user": true, "passphrase": true,
}

// secretValues collects the secret strings of m, longest first, so a
// secret that contains another is replaced whole.
func secretValues(m map[string]any) []string {
	var out []string
	var walk func(v any, key string)
	walk = func(v any, key string) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				walk(e, strings.ToLower(k))
			}
		case []any:
			for _, e := range x {
				walk(e, key)
			}
		case string:
			if secretKeys[key] && len(x) >= 2 {
				out = append(out, x)
			}
		case int, int64, uint64, float64:
			if secretKeys[key] {
				out = append(out, fmt.Sprint(x))
			}
		}
	}
	walk(m, "")
	slices.SortFunc(out, func(a, b string) int { return cmp.Or(len(b)-len(a), strings.Compare(a, b)) })
	return slices.Compact(out)
}

// scrub replaces every secret in s with REDACTED.
func scrub(s string, secrets []string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "REDACTED")
		}
	}
	return s
}
