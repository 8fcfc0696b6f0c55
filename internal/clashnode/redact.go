package clashnode

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Placeholder replaces a secret value in redacted text.
const Placeholder = "REDACTED"

// minSecretLen is the shortest value that is replaced: a one-character
// value would mangle the whole message and is no secret worth the name.
const minSecretLen = 2

// secretKeys name the map entries whose values are secrets, for every
// node type mihomo parses (adapter/parser.go: ss, ssr, vmess, vless,
// trojan, hysteria, hysteria2, tuic, wireguard, snell, socks5, http, ssh,
// mieru, anytls) and their nested options (plugin-opts of every ss
// plugin, ss-opts, reality-opts, ws/http headers, wireguard peers). A key
// marks everything under it: reality-opts and headers are secret whole.
// Keys are compared in lower case with "_" as "-", as mihomo's decoder
// reads them. redact_test.go fills every string option of every type and
// fails on a value that is not redacted and not known to be public.
var secretKeys = map[string]bool{
	// Credentials proper.
	"password": true, "username": true, "user": true, "uuid": true, "token": true,
	"auth": true, "auth-str": true, "psk": true, "passphrase": true,
	"private-key": true, "private-key-passphrase": true, "pre-shared-key": true,
	// Keys of obfuscation layers, which let anyone in who knows them.
	"obfs": true, "obfs-password": true, "obfs-param": true, "protocol-param": true,
	"key": true, "encryption": true,
	// Identify the account or the server's private side: REALITY's key and
	// short id, WireGuard's peer key, headers (an Authorization header, a
	// Host that names the account).
	"reality-opts": true, "public-key": true, "short-id": true,
	"headers": true, "ws-headers": true,
}

// isSecretKey reports whether a map key holds a secret.
func isSecretKey(k string) bool {
	return secretKeys[strings.ReplaceAll(strings.ToLower(k), "_", "-")]
}

// Redactor removes one node's secret values from text. The zero value
// removes nothing.
type Redactor struct {
	secrets []string // longest first, so a secret that contains another goes whole
}

// NewRedactor collects the secret values of a Clash proxy map.
func NewRedactor(m map[string]any) Redactor {
	var out []string
	collectSecrets(m, false, &out)
	return RedactorOf(out...)
}

// RedactorOf is a Redactor for secret values known otherwise (the parts of
// a subscription URL, say); values shorter than two bytes are ignored.
func RedactorOf(values ...string) Redactor {
	out := slices.DeleteFunc(slices.Clone(values), func(s string) bool { return len(s) < minSecretLen })
	slices.SortFunc(out, func(a, b string) int { return cmp.Or(len(b)-len(a), strings.Compare(a, b)) })
	return Redactor{secrets: slices.Compact(out)}
}

// Redact replaces every secret value in s with Placeholder.
func (r Redactor) Redact(s string) string {
	for _, sec := range r.secrets {
		s = strings.ReplaceAll(s, sec, Placeholder)
	}
	return s
}

func collectSecrets(v any, secret bool, out *[]string) {
	var s string
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			collectSecrets(e, secret || isSecretKey(k), out)
		}
		return
	case map[string]string:
		for k, e := range x {
			collectSecrets(e, secret || isSecretKey(k), out)
		}
		return
	case []any:
		for _, e := range x {
			collectSecrets(e, secret, out)
		}
		return
	case []string:
		for _, e := range x {
			collectSecrets(e, secret, out)
		}
		return
	case string:
		s = x
	case json.Number:
		s = string(x)
	case int, int64, uint64, float64:
		s = fmt.Sprint(x)
	default:
		return
	}
	if secret {
		*out = append(*out, s)
	}
}
