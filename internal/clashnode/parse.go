package clashnode

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// MaxNodes bounds the entries of one document that are looked at; the
// rest are skipped with one reason.
const MaxNodes = 1000

// List is a parsed document of nodes: the usable nodes in document order,
// and the entries that were not usable, each with its reason.
type List struct {
	// Format is "clash-yaml", "base64-links" or "links".
	Format  string
	Nodes   []*Node
	Skipped []Skipped
}

// Skipped is an entry of a document that could not be used.
type Skipped struct {
	// Name of the entry when it had one, else its position ("proxies[3]",
	// "line 7").
	Name string
	// Reason it was skipped, without secrets.
	Reason string
}

// ParseOptions tune Parse.
type ParseOptions struct {
	// CheckName, when set, vets every node's name with the caller's own
	// rules (the control plane's name syntax and reserved words); a name
	// it refuses skips the entry with its error.
	CheckName func(name string) error
}

// Parse reads a document of Clash nodes: Clash YAML (a file with a
// proxies: list, one node map, or a list of node maps) or share links
// (ss://, vmess://, trojan://, vless://, socks5://, http://, ...), one a
// line, plain or base64-encoded. A bad entry is skipped with its reason,
// never the whole document; the caller decides whether a skipped entry is
// fatal. The error is for input that holds no nodes at all or no usable
// one (then the List is returned too, with its skipped entries); it does
// not wrap ErrInvalid, so that the caller can say what the document was
// (a subscription, a flag value). Messages never quote the input.
func Parse(data []byte, opts ParseOptions) (*List, error) {
	Setup()
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	trimmed := bytes.TrimSpace(data)
	switch {
	case len(trimmed) == 0:
		return nil, errors.New("empty")
	case looksLikeHTML(trimmed):
		return nil, errors.New("an HTML page, not Clash YAML or share links (a login or error page? check the URL)")
	case !utf8.Valid(trimmed):
		return nil, errors.New("binary data, not Clash YAML or share links")
	}
	p := &parser{opts: opts, used: map[string]bool{}}
	var doc any
	if err := yaml.Unmarshal(trimmed, &doc); err != nil {
		if bytes.Contains(trimmed, []byte("proxies:")) || !bytes.Contains(trimmed, []byte("://")) {
			// Meant as YAML; the YAML error says where it breaks.
			return nil, fmt.Errorf("the Clash YAML does not parse: %s", yamlError(err))
		}
		// Share links that happen not to be YAML.
		doc = nil
	}
	var err error
	switch d := doc.(type) {
	case map[string]any:
		err = p.yamlMapping(d)
	case []any:
		err = p.yamlList(d)
	default:
		err = p.links(trimmed)
	}
	if err != nil {
		return nil, err
	}
	if len(p.list.Nodes) == 0 {
		return &p.list, fmt.Errorf("no usable node (%d skipped%s)", len(p.list.Skipped), firstReason(p.list.Skipped))
	}
	return &p.list, nil
}

// parser collects the nodes of one document.
type parser struct {
	opts ParseOptions
	list List
	used map[string]bool // names taken so far
}

func (p *parser) skip(name, reason string) {
	p.list.Skipped = append(p.list.Skipped, Skipped{Name: name, Reason: reason})
}

// add builds one entry's node, or skips it under label.
func (p *parser) add(label string, m map[string]any) {
	name, _ := m["name"].(string)
	if name != "" && p.used[name] {
		p.skip(label, "duplicate name: an earlier entry has it")
		return
	}
	if p.opts.CheckName != nil {
		if err := p.opts.CheckName(name); err != nil {
			p.skip(label, err.Error())
			return
		}
	}
	n, err := New(m)
	if err != nil {
		var ne *Error
		if errors.As(err, &ne) {
			p.skip(label, ne.Reason)
		} else {
			p.skip(label, err.Error())
		}
		return
	}
	p.used[n.Name()] = true
	p.list.Nodes = append(p.list.Nodes, n)
}

func (p *parser) yamlMapping(doc map[string]any) error {
	p.list.Format = "clash-yaml"
	if _, ok := doc["type"]; ok {
		// One node map, as a --proxy flag takes it.
		p.add(entryLabel("node", doc), doc)
		return nil
	}
	raw, ok := doc["proxies"]
	if !ok {
		if _, providers := doc["proxy-providers"]; providers {
			return errors.New("the Clash YAML has no proxies: list (proxy-providers are not followed)")
		}
		return errors.New("YAML without a proxies: list")
	}
	list, ok := raw.([]any)
	if !ok {
		return errors.New("proxies: is not a list")
	}
	if len(list) == 0 {
		return errors.New("proxies: is empty")
	}
	return p.yamlList(list)
}

func (p *parser) yamlList(list []any) error {
	p.list.Format = "clash-yaml"
	for i, item := range list {
		label := fmt.Sprintf("proxies[%d]", i)
		if i == MaxNodes {
			p.skip(label, fmt.Sprintf("more than %d entries: this one and the %d after it are ignored", MaxNodes, len(list)-i-1))
			break
		}
		m, ok := item.(map[string]any)
		if !ok {
			p.skip(label, "not a map of proxy settings")
			continue
		}
		p.add(entryLabel(label, m), m)
	}
	return nil
}

// entryLabel names an entry in skip reports: its name, else its position.
func entryLabel(position string, m map[string]any) string {
	if name, ok := m["name"].(string); ok && name != "" {
		return name
	}
	return position
}

func firstReason(sk []Skipped) string {
	if len(sk) == 0 {
		return ""
	}
	return fmt.Sprintf("; first: %s: %s", sk[0].Name, sk[0].Reason)
}

func looksLikeHTML(b []byte) bool {
	head := strings.ToLower(string(b[:min(len(b), 512)]))
	return strings.HasPrefix(head, "<") || strings.Contains(head, "<html") || strings.Contains(head, "<!doctype")
}

// yamlError is a YAML error without anything of the input: yaml.v3 quotes
// the offending text in some messages (an unknown anchor, say), which may
// be a password, so a message with a quote keeps only its position.
func yamlError(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if !strings.ContainsAny(msg, "'\"`") {
		return clip(msg, 200)
	}
	if i := strings.Index(msg, "line "); i >= 0 {
		end := i + len("line ")
		for end < len(msg) && msg[end] >= '0' && msg[end] <= '9' {
			end++
		}
		return msg[i:end]
	}
	return "syntax error"
}
