package clashnode

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixtureSecrets are the secret values of the fixtures: none may appear in
// a skip reason or an error.
var fixtureSecrets = regexp.MustCompile(`[A-Za-z0-9-]*Secret[A-Za-z0-9-]*`)

func nodeNames(sub *List) []string {
	var out []string
	for _, n := range sub.Nodes {
		out = append(out, n.Name())
	}
	return out
}

// reserved is a caller's name rule, as the control plane has one.
var reserved = ParseOptions{CheckName: func(name string) error {
	if name == "direct" {
		return errors.New(`name "direct" is reserved`)
	}
	return nil
}}

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		fixture string
		format  string
		nodes   []string
		types   []string
		skipped map[string]string // name → part of the reason
	}{
		{
			fixture: "clash.yaml", format: "clash-yaml",
			nodes: []string{"🇭🇰 Hong Kong 01", "🇯🇵 Tokyo 02", "🇺🇸 US vmess ws", "🇸🇬 Singapore trojan", "office socks", "corp http proxy"},
			types: []string{"ss", "ss", "vmess", "trojan", "socks5", "http"},
		},
		{
			fixture: "links.txt", format: "links",
			nodes: []string{"HK ss", "JP chacha", "US vmess", "SG trojan", "DE vless", "office socks", "corp http"},
			types: []string{"ss", "ss", "vmess", "trojan", "vless", "socks5", "http"},
			skipped: map[string]string{
				"broken ss (line 8)":  "ss link does not parse",
				"old school (line 9)": `unsupported link scheme "gopher"`,
				"line 10":             "not a share link",
			},
		},
		{
			fixture: "links.b64", format: "base64-links",
			nodes: []string{"HK ss", "JP chacha", "US vmess", "SG trojan", "DE vless", "office socks", "corp http"},
			types: []string{"ss", "ss", "vmess", "trojan", "vless", "socks5", "http"},
		},
		{
			fixture: "hostile.yaml", format: "clash-yaml",
			nodes: []string{"good one"},
			types: []string{"ss"},
			skipped: map[string]string{
				"unknown type":       "unsupport proxy type: warp",
				"wrong cipher":       "rc4-nope",
				"missing port":       "missing port",
				"port out of range":  "port 70000 is not between 1 and 65535",
				"port not a number":  "port is not a number",
				"missing server":     "missing server",
				"proxies[7]":         "name: must not be empty",
				"direct":             "reserved",
				"just direct":        "is not a proxy",
				"vmess without uuid": "uuid",
				"vmess bad cipher":   "rot13",
				"chained":            "dialer-proxy",
				"proxies[14]":        "not a map",
				"no type":            "missing type",
				"nested keys":        "not a plain map",
				"good one":           "duplicate name",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.fixture, func(t *testing.T) {
			t.Parallel()
			sub, err := Parse(readFixture(t, tc.fixture), reserved)
			if err != nil {
				t.Fatal(err)
			}
			if sub.Format != tc.format {
				t.Errorf("format %q, want %q", sub.Format, tc.format)
			}
			if got := strings.Join(nodeNames(sub), "|"); got != strings.Join(tc.nodes, "|") {
				t.Errorf("nodes\n got %s\nwant %s", got, strings.Join(tc.nodes, "|"))
			}
			for i, n := range sub.Nodes {
				if i < len(tc.types) && n.Type() != tc.types[i] {
					t.Errorf("node %q type %q, want %q", n.Name(), n.Type(), tc.types[i])
				}
				if n.Server() == "" || n.proxy == nil {
					t.Errorf("node %q: no server or adapter", n.Name())
				}
				// Edges get JSON that mihomo parses again, secrets included.
				var m map[string]any
				if err := json.Unmarshal([]byte(n.JSON()), &m); err != nil || m["name"] != n.Name() {
					t.Errorf("node %q JSON %s: %v", n.Name(), n.JSON(), err)
				}
			}
			for _, s := range sub.Skipped {
				if fixtureSecrets.MatchString(s.Reason) || fixtureSecrets.MatchString(s.Name) {
					t.Errorf("skip reason leaks a secret: %+v", s)
				}
			}
			for name, want := range tc.skipped {
				if want == "" {
					continue
				}
				found := false
				for _, s := range sub.Skipped {
					if s.Name == name {
						found = true
						if !strings.Contains(s.Reason, want) {
							t.Errorf("skipped %q: reason %q, want it to contain %q", name, s.Reason, want)
						}
					}
				}
				if !found {
					t.Errorf("%q not skipped; skipped: %+v", name, sub.Skipped)
				}
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body []byte
		want string
	}{
		{"empty", nil, "empty"},
		{"whitespace", []byte(" \n\t\n"), "empty"},
		{"html", readFixture(t, "login.html"), "HTML page"},
		{"plain text", readFixture(t, "expired.txt"), "neither Clash YAML"},
		{"providers only", readFixture(t, "providers-only.yaml"), "proxy-providers are not followed"},
		{"empty proxies", readFixture(t, "empty-proxies.yaml"), "proxies: is empty"},
		{"proxies not a list", []byte("proxies: {a: 1}\n"), "not a list"},
		{"yaml without proxies", []byte("port: 7890\nmode: rule\n"), "without a proxies: list"},
		{"binary", []byte{0xff, 0xfe, 0x00, 0x01, 0x80}, "binary"},
		{"every link bad", []byte("ss://nope#a\nvmess://!!!#b\n"), "no usable node (2 skipped"},
		{"every node bad", []byte("proxies:\n  - {name: x, type: warp, server: a, port: 1}\n"), "no usable node (1 skipped; first: x: type warp: unsupport proxy type"},
		{"billion laughs", []byte("a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\nproxies: *i\n"), "excessive aliasing"},
		{"broken yaml", []byte("proxies:\n  - {name: x, type: ss\n  bad: [\n"), "Clash YAML does not parse"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse(tc.body, ParseOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestParseManyNodes(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("proxies:\n")
	for i := range MaxNodes + 5 {
		b.WriteString("  - {name: n" + strconv.Itoa(i) + ", type: socks5, server: 127.0.0.1, port: 1080}\n")
	}
	sub, err := Parse([]byte(b.String()), ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sub.Nodes) != MaxNodes || len(sub.Skipped) != 1 || !strings.Contains(sub.Skipped[0].Reason, "more than 1000") {
		t.Fatalf("%d nodes, skipped %+v", len(sub.Nodes), sub.Skipped)
	}
}

func TestParseLinkNames(t *testing.T) {
	t.Parallel()
	body := "socks5://127.0.0.1:1080#same\nsocks5://127.0.0.1:1081#same\nsocks5://127.0.0.1:1082#same-02\nss://YWVzLTI1Ni1nY206cHc@127.0.0.1:8388\n"
	sub, err := Parse([]byte(body), ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := "same|same-02|same-02-02|ss 127.0.0.1:8388"
	if got := strings.Join(nodeNames(sub), "|"); got != want {
		t.Fatalf("names %s, want %s", got, want)
	}
}
