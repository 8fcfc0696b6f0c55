package proxydial

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/metacubex/mihomo/common/convert"
	"gopkg.in/yaml.v3"
)

// maxSpecFile caps a node file read through "@FILE".
const maxSpecFile = 1 << 20

// ParseNodes parses one --proxy value into nodes. The value is one of:
//
//   - a Clash node as a YAML or JSON map ({name: a, type: ss, server: …});
//   - a YAML/JSON list of such maps, or a Clash file with a "proxies:" list;
//   - one or more share links separated by white space: ss://, vmess://,
//     trojan://, vless:// and the other links of mihomo's converter, plus
//     socks5:// (socks://, socks5h://), http:// and https:// as plain URLs
//     with optional user:password (a fragment names the node);
//   - a base64-encoded list of share links (a subscription body);
//   - "@PATH": any of the above read from a file (keeps secrets out of the
//     process list).
//
// Errors name the position of the bad entry but never echo the value: it
// holds passwords.
func ParseNodes(value string) ([]*Node, error) {
	value = strings.TrimSpace(value)
	if path, ok := strings.CutPrefix(value, "@"); ok {
		data, err := readSpecFile(path)
		if err != nil {
			return nil, err
		}
		value = strings.TrimSpace(string(data))
	}
	if value == "" {
		return nil, fmt.Errorf("%w: empty", ErrInvalidNode)
	}
	maps, err := nodeMaps(value)
	if err != nil {
		return nil, err
	}
	nodes := make([]*Node, 0, len(maps))
	seen := map[string]bool{}
	for i, m := range maps {
		n, err := NewNode(m)
		if err != nil {
			if len(maps) > 1 {
				return nil, fmt.Errorf("entry %d: %w", i+1, err)
			}
			return nil, err
		}
		if seen[n.Name()] {
			return nil, fmt.Errorf("%w: two nodes are named %q", ErrInvalidNode, n.Name())
		}
		seen[n.Name()] = true
		nodes = append(nodes, n)
	}
	return nodes, nil
}

func readSpecFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidNode, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSpecFile+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", ErrInvalidNode, path, err)
	}
	if len(data) > maxSpecFile {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrInvalidNode, path, maxSpecFile)
	}
	return data, nil
}

// nodeMaps turns a value into Clash maps.
func nodeMaps(value string) ([]map[string]any, error) {
	if looksLikeLinks(value) {
		return linkMaps(strings.Fields(value))
	}
	var doc any
	if err := yaml.Unmarshal([]byte(value), &doc); err != nil {
		// yaml's message quotes the offending line, which may hold a
		// password: only its position is kept.
		return nil, fmt.Errorf("%w: neither a share link nor a YAML/JSON node (%s)", ErrInvalidNode, yamlPosition(err))
	}
	switch d := doc.(type) {
	case map[string]any:
		if list, ok := d["proxies"]; ok {
			return listMaps(list)
		}
		return []map[string]any{d}, nil
	case []any:
		return listMaps(d)
	case string:
		// A base64 subscription body is one YAML scalar.
		decoded := convert.DecodeBase64([]byte(d))
		if !bytes.Equal(decoded, []byte(d)) && looksLikeLinks(string(decoded)) {
			return linkMaps(strings.Fields(string(decoded)))
		}
	}
	return nil, fmt.Errorf("%w: neither a share link nor a YAML/JSON node", ErrInvalidNode)
}

func listMaps(list any) ([]map[string]any, error) {
	items, ok := list.([]any)
	if !ok || len(items) == 0 {
		return nil, fmt.Errorf("%w: proxies must be a non-empty list of nodes", ErrInvalidNode)
	}
	out := make([]map[string]any, 0, len(items))
	for i, it := range items {
		m, ok := it.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%w: entry %d is not a map", ErrInvalidNode, i+1)
		}
		out = append(out, m)
	}
	return out, nil
}

// looksLikeLinks reports whether every word of value is scheme://….
func looksLikeLinks(value string) bool {
	words := strings.Fields(value)
	if len(words) == 0 {
		return false
	}
	for _, w := range words {
		scheme, _, ok := strings.Cut(w, "://")
		if !ok || scheme == "" || strings.ContainsAny(scheme, "{}[]\"': ") {
			return false
		}
	}
	return true
}

// linkMaps converts share links, one node each.
func linkMaps(links []string) ([]map[string]any, error) {
	out := make([]map[string]any, 0, len(links))
	for i, link := range links {
		scheme, _, _ := strings.Cut(link, "://")
		scheme = strings.ToLower(scheme)
		var m map[string]any
		var err error
		switch scheme {
		case "socks", "socks5", "socks5h", "http", "https":
			m, err = plainProxyLink(scheme, link)
		default:
			var maps []map[string]any
			maps, err = convert.ConvertsV2Ray([]byte(link))
			if err == nil && len(maps) != 1 {
				err = errors.New("not exactly one node")
			}
			if err == nil {
				m = maps[0]
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%w: share link %d (%s://…) does not parse: %s", ErrInvalidNode, i+1, scheme, err.Error())
		}
		if name, _ := m["name"].(string); name == "" {
			m["name"] = fmt.Sprintf("%s-%v:%v", scheme, m["server"], m["port"])
		}
		out = append(out, m)
	}
	return out, nil
}

// plainProxyLink parses socks5://[user:pass@]host:port[#name] and
// http(s)://… proxy URLs. Its errors never contain the link.
func plainProxyLink(scheme, link string) (map[string]any, error) {
	u, err := url.Parse(link)
	if err != nil {
		return nil, errors.New("not a URL")
	}
	if (u.Path != "" && u.Path != "/") || u.Opaque != "" {
		return nil, errors.New("a proxy URL has no path")
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return nil, errors.New("no host")
	}
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[scheme]
		if port == "" {
			port = "1080"
		}
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return nil, errors.New("bad port")
	}
	typ := "socks5"
	if scheme == "http" || scheme == "https" {
		typ = "http"
	}
	name := u.Fragment
	if name == "" {
		name = scheme + "-" + net.JoinHostPort(host, port)
	}
	m := map[string]any{"name": name, "type": typ, "server": host, "port": int(p)}
	if u.User != nil {
		m["username"] = u.User.Username()
		if pw, ok := u.User.Password(); ok {
			m["password"] = pw
		}
	}
	q := u.Query()
	if scheme == "https" {
		m["tls"] = true
		if sni := q.Get("sni"); sni != "" {
			m["sni"] = sni
		}
	}
	for _, k := range []string{"skip-cert-verify", "allowInsecure"} {
		if v, _ := strconv.ParseBool(q.Get(k)); v {
			m["skip-cert-verify"] = true
		}
	}
	return m, nil
}

// yamlPosition keeps the "line N" part of a YAML error.
func yamlPosition(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "line "); i >= 0 {
		end := i + len("line ")
		for end < len(msg) && msg[end] >= '0' && msg[end] <= '9' {
			end++
		}
		return msg[i:end]
	}
	return "syntax error"
}
