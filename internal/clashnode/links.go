package clashnode

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/metacubex/mihomo/common/convert"
)

// linkSchemes are the share-link schemes read: mihomo's converter's, and
// plain proxy URLs.
var linkSchemes = map[string]bool{
	"ss": true, "ssr": true, "vmess": true, "vless": true, "trojan": true,
	"socks": true, "socks5": true, "socks5h": true, "http": true, "https": true,
	"hysteria": true, "hysteria2": true, "hy2": true, "tuic": true, "anytls": true,
}

// links reads share links, one per line, after undoing a base64 encoding
// of the whole body (standard or URL alphabet, padded or not, wrapped or
// not). Each line is converted on its own, so a line that does not parse
// is skipped and named instead of silently dropped.
func (p *parser) links(body []byte) error {
	p.list.Format = "links"
	if dec, ok := decodeBase64(body); ok {
		body, p.list.Format = dec, "base64-links"
	}
	if !bytes.Contains(body, []byte("://")) {
		return errors.New("neither Clash YAML with a proxies: list nor share links (no line has a scheme://)")
	}
	names := map[string]bool{} // link names given out, failed ones too
	considered := 0
	for i, line := range strings.Split(string(body), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "//") {
			continue
		}
		label := fmt.Sprintf("line %d", i+1)
		if considered == MaxNodes {
			p.skip(label, fmt.Sprintf("more than %d links: this line and the ones after it are ignored", MaxNodes))
			break
		}
		considered++
		if name := linkName(line); name != "" {
			label = fmt.Sprintf("%s (%s)", name, label)
		}
		m, err := linkMap(line)
		if err != nil {
			p.skip(label, err.Error())
			continue
		}
		m["name"] = uniqueName(names, nodeName(m))
		p.add(label, m)
	}
	return nil
}

// linkMap converts one share link into a Clash map. Its errors never
// contain the link.
func linkMap(line string) (map[string]any, error) {
	scheme, _, found := strings.Cut(line, "://")
	scheme = strings.ToLower(scheme)
	switch {
	case !found:
		return nil, errors.New("not a share link (no scheme://)")
	case !linkSchemes[scheme]:
		return nil, fmt.Errorf("unsupported link scheme %q", clip(scheme, 20))
	case scheme == "socks" || scheme == "socks5" || scheme == "socks5h" || scheme == "http" || scheme == "https":
		m, err := plainProxyLink(scheme, line)
		if err != nil {
			return nil, fmt.Errorf("%s link does not parse: %w", scheme, err)
		}
		return m, nil
	}
	maps, err := convertLink(line)
	if err != nil || len(maps) != 1 {
		// The converter's errors say nothing useful and may quote the link.
		return nil, fmt.Errorf("%s link does not parse", scheme)
	}
	return maps[0], nil
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

// plainProxyLink parses socks5://[user:pass@]host[:port][#name] and
// http(s)://… proxy URLs. mihomo's converter is not used for them: it
// wants a port, reads the user part as base64 and turns certificate
// verification off for https. Its errors never contain the link.
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
	pn, err := strconv.ParseUint(port, 10, 16)
	if err != nil || pn == 0 {
		return nil, errors.New("bad port")
	}
	typ := "socks5"
	if scheme == "http" || scheme == "https" {
		typ = "http"
	}
	m := map[string]any{"name": u.Fragment, "type": typ, "server": host, "port": int(pn)}
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

// nodeName is the link's name, or "<type> <server>:<port>" when it had
// none.
func nodeName(m map[string]any) string {
	if name, _ := m["name"].(string); strings.TrimSpace(name) != "" {
		return name
	}
	return fmt.Sprintf("%v %s", m["type"], net.JoinHostPort(fmt.Sprint(m["server"]), fmt.Sprint(m["port"])))
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
