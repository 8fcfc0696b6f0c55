package clash

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// MaxNodes bounds the entries of one subscription that are looked at; the
// rest are skipped with one reason.
const MaxNodes = 1000

// Subscription is a parsed subscription: the usable nodes in subscription
// order, and the entries that were skipped, each with its reason.
type Subscription struct {
	// Format is "clash-yaml", "base64-links" or "links".
	Format  string
	Nodes   []*Node
	Skipped []Skipped
}

// Skipped is a subscription entry that could not be used.
type Skipped struct {
	// Name of the entry when it had one, else its position ("proxies[3]",
	// "line 7").
	Name string
	// Reason it was skipped, without secrets.
	Reason string
}

// Parse reads a subscription: Clash YAML with a proxies: list, or share
// links (ss://, vmess://, trojan://, vless://, socks5://, http://, ...),
// one per line, plain or base64-encoded. A bad entry is skipped with its
// reason, never the whole subscription; the error (wrapping
// ErrSubscription) is for input that is not a subscription at all or
// holds no usable node.
func Parse(data []byte) (*Subscription, error) {
	ConfigureMihomo()
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	trimmed := bytes.TrimSpace(data)
	switch {
	case len(trimmed) == 0:
		return nil, fmt.Errorf("%w: the subscription is empty", ErrSubscription)
	case looksLikeHTML(trimmed):
		return nil, fmt.Errorf("%w: the subscription is an HTML page, not Clash YAML or share links (a login or error page? check the URL)", ErrSubscription)
	case !utf8.Valid(trimmed):
		return nil, fmt.Errorf("%w: the subscription is binary data, not Clash YAML or share links", ErrSubscription)
	}
	var sub *Subscription
	doc, yerr := yamlMapping(trimmed)
	if yerr != nil && bytes.Contains(trimmed, []byte("proxies:")) {
		// Meant as Clash YAML; the YAML error says where it breaks.
		return nil, fmt.Errorf("%w: Clash YAML does not parse: %s", ErrSubscription, clip(yerr.Error(), 200))
	}
	if doc != nil {
		var err error
		if sub, err = parseClashYAML(doc); err != nil {
			return nil, err
		}
	} else {
		var err error
		if sub, err = parseLinks(trimmed); err != nil {
			return nil, err
		}
	}
	if len(sub.Nodes) == 0 {
		return sub, fmt.Errorf("%w: no usable node (%d skipped%s)", ErrSubscription, len(sub.Skipped), firstReason(sub.Skipped))
	}
	return sub, nil
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

// yamlMapping decodes b as a YAML document whose top level is a mapping;
// (nil, nil) when it is YAML but not a mapping (a base64 blob, links).
func yamlMapping(b []byte) (map[string]any, error) {
	var doc any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	m, _ := doc.(map[string]any)
	return m, nil
}

func parseClashYAML(doc map[string]any) (*Subscription, error) {
	raw, ok := doc["proxies"]
	if !ok {
		if _, providers := doc["proxy-providers"]; providers {
			return nil, fmt.Errorf("%w: Clash YAML without a proxies: list (proxy-providers are not followed)", ErrSubscription)
		}
		return nil, fmt.Errorf("%w: YAML without a proxies: list", ErrSubscription)
	}
	list, ok := raw.([]any)
	if !ok {
		return nil, fmt.Errorf("%w: proxies: is not a list", ErrSubscription)
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("%w: proxies: is empty", ErrSubscription)
	}
	sub := &Subscription{Format: "clash-yaml"}
	seen := map[string]bool{}
	for i, item := range list {
		label := fmt.Sprintf("proxies[%d]", i)
		if i == MaxNodes {
			sub.Skipped = append(sub.Skipped, Skipped{Name: label, Reason: fmt.Sprintf("more than %d entries: this one and the %d after it are ignored", MaxNodes, len(list)-i-1)})
			break
		}
		m, ok := item.(map[string]any)
		if !ok {
			sub.Skipped = append(sub.Skipped, Skipped{Name: label, Reason: "not a map of proxy settings"})
			continue
		}
		if name, ok := m["name"].(string); ok && name != "" {
			label = name
		}
		if seen[label] {
			sub.Skipped = append(sub.Skipped, Skipped{Name: label, Reason: "duplicate name: an earlier entry has it"})
			continue
		}
		n, err := NewNode(m)
		if err != nil {
			sub.Skipped = append(sub.Skipped, Skipped{Name: label, Reason: err.Error()})
			continue
		}
		seen[n.Name] = true
		sub.Nodes = append(sub.Nodes, n)
	}
	return sub, nil
}
