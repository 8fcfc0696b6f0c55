package clash

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/metacubex/mihomo/common/convert"
)

// linkSchemes are the share-link schemes mihomo's converter knows.
var linkSchemes = map[string]bool{
	"ss": true, "ssr": true, "vmess": true, "vless": true, "trojan": true,
	"socks": true, "socks5": true, "socks5h": true, "http": true, "https": true,
	"hysteria": true, "hysteria2": true, "hy2": true, "tuic": true, "anytls": true,
}

// parseLinks reads share links, one per line, after undoing a base64
// encoding of the whole body (standard or URL alphabet, padded or not,
// wrapped or not). Each line is converted on its own with mihomo's
// converter, so a line that does not parse is skipped and named instead
// of silently dropped.
func parseLinks(body []byte) (*Subscription, error) {
	sub := &Subscription{Format: "links"}
	if dec, ok := decodeBase64(body); ok {
		body, sub.Format = dec, "base64-links"
	}
	lines := strings.Split(string(body), "\n")
	if !strings.Contains(string(body), "://") {
		return nil, fmt.Errorf("%w: neither Clash YAML with a proxies: list nor share links (no line has a scheme://)", ErrSubscription)
	}
	names := map[string]bool{}
	considered := 0
	for i, line := range lines {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "//") {
			continue
		}
		label := fmt.Sprintf("line %d", i+1)
		if considered == MaxNodes {
			sub.Skipped = append(sub.Skipped, Skipped{Name: label, Reason: fmt.Sprintf("more than %d links: this line and the ones after it are ignored", MaxNodes)})
			break
		}
		considered++
		if name := linkName(line); name != "" {
			label = fmt.Sprintf("%s (%s)", name, label)
		}
		scheme, _, found := strings.Cut(line, "://")
		scheme = strings.ToLower(scheme)
		switch {
		case !found:
			sub.Skipped = append(sub.Skipped, Skipped{Name: label, Reason: "not a share link (no scheme://)"})
			continue
		case !linkSchemes[scheme]:
			sub.Skipped = append(sub.Skipped, Skipped{Name: label, Reason: fmt.Sprintf("unsupported link scheme %q", clip(scheme, 20))})
			continue
		}
		maps, err := convertLink(line)
		if err != nil || len(maps) != 1 {
			sub.Skipped = append(sub.Skipped, Skipped{Name: label, Reason: fmt.Sprintf("%s link does not parse", scheme)})
			continue
		}
		m := maps[0]
		m["name"] = uniqueName(names, nodeName(m))
		n, err := NewNode(m)
		if err != nil {
			sub.Skipped = append(sub.Skipped, Skipped{Name: label, Reason: err.Error()})
			continue
		}
		sub.Nodes = append(sub.Nodes, n)
	}
	return sub, nil
}

// convertLink is mihomo's converter for one line, with a panic in it
// turned into an error: the line is hostile input.
func convertLink(line string) (maps []map[string]any, err error) {
	defer func() {
		if r := recover(); r != nil {
			maps, err = nil, fmt.Errorf("converter panicked: %v", r)
		}
	}()
	return convert.ConvertsV2Ray([]byte(line))
}

// decodeBase64 decodes a base64 body into text with at least one link.
func decodeBase64(body []byte) ([]byte, bool) {
	compact := bytes.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, body)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		dec, err := enc.DecodeString(string(compact))
		if err == nil && utf8.Valid(dec) && bytes.Contains(dec, []byte("://")) {
			return dec, true
		}
	}
	return nil, false
}

// linkName is the name a link gives its node, for skip reports: the
// fragment, or a vmess link's "ps". Never anything else of the link.
func linkName(line string) string {
	if scheme, body, _ := strings.Cut(line, "://"); strings.EqualFold(scheme, "vmess") {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			if dec, err := enc.DecodeString(body); err == nil {
				var v struct {
					PS string `json:"ps"`
				}
				if json.Unmarshal(dec, &v) == nil {
					return clip(v.PS, 128)
				}
			}
		}
	}
	if i := strings.LastIndexByte(line, '#'); i >= 0 {
		if name, err := url.PathUnescape(line[i+1:]); err == nil {
			return clip(name, 128)
		}
	}
	return ""
}

// nodeName is the converter's name, or "<type> <server>:<port>" when the
// link had none.
func nodeName(m map[string]any) string {
	if name, _ := m["name"].(string); strings.TrimSpace(name) != "" {
		return name
	}
	return fmt.Sprintf("%v %v:%v", m["type"], m["server"], m["port"])
}

// uniqueName appends -02, -03, ... to a name already used, as mihomo's
// converter does within one subscription.
func uniqueName(used map[string]bool, name string) string {
	out := name
	for i := 2; used[out]; i++ {
		out = fmt.Sprintf("%s-%02d", name, i)
	}
	used[out] = true
	return out
}

// clip shortens s to at most n bytes on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
