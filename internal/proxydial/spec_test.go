package proxydial_test

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/clashnode"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/proxydial"
)

func TestParseNodes(t *testing.T) {
	t.Parallel()
	ssLink := "ss://" + base64.RawURLEncoding.EncodeToString([]byte("aes-256-gcm:pa55word")) + "@127.0.0.1:8388#my%20ss"
	vmessJSON := `{"v":"2","ps":"vm","add":"::1","port":"10086","id":"6f1b8a5e-2a7d-4c3e-9b1f-0d2e3c4b5a69","aid":"0","net":"tcp","type":"none","tls":""}`
	dir := t.TempDir()
	file := filepath.Join(dir, "nodes.yaml")
	if err := os.WriteFile(file, []byte("proxies:\n  - {name: a, type: socks5, server: 127.0.0.1, port: 1080}\n  - {name: b, type: http, server: localhost, port: 3128}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, value string
		want        []string // name type server
	}{
		{"ss link", ssLink, []string{"my ss ss 127.0.0.1:8388"}},
		{"trojan link", "trojan://pw@example.com:443?allowInsecure=1&sni=x#tj", []string{"tj trojan example.com:443"}},
		{"vmess link", "vmess://" + base64.StdEncoding.EncodeToString([]byte(vmessJSON)), []string{"vm vmess [::1]:10086"}},
		{"socks5 with auth", "socks5://user:p%40ss@127.0.0.1:1080#s5", []string{"s5 socks5 127.0.0.1:1080"}},
		{"socks5 default name and port", "socks5h://127.0.0.1", []string{"socks5 127.0.0.1:1080 socks5 127.0.0.1:1080"}},
		{"http", "http://127.0.0.1:3128#web", []string{"web http 127.0.0.1:3128"}},
		{"https", "https://proxy.example:8443?skip-cert-verify=1", []string{"http proxy.example:8443 http proxy.example:8443"}},
		{"two links", ssLink + "\n socks5://127.0.0.1:1081#b", []string{"my ss ss 127.0.0.1:8388", "b socks5 127.0.0.1:1081"}},
		{"base64 subscription", base64.StdEncoding.EncodeToString([]byte(ssLink + "\nsocks5://127.0.0.1:1081#b\n")),
			[]string{"my ss ss 127.0.0.1:8388", "b socks5 127.0.0.1:1081"}},
		{"json map", `{"name":"j","type":"ss","server":"127.0.0.1","port":8388,"cipher":"chacha20-ietf-poly1305","password":"x"}`,
			[]string{"j ss 127.0.0.1:8388"}},
		{"yaml map", "name: y\ntype: socks5\nserver: 127.0.0.1\nport: 1080\n", []string{"y socks5 127.0.0.1:1080"}},
		{"yaml list", "- {name: a, type: socks5, server: 127.0.0.1, port: 1}\n- {name: b, type: socks5, server: 127.0.0.1, port: 2}",
			[]string{"a socks5 127.0.0.1:1", "b socks5 127.0.0.1:2"}},
		{"clash file", "@" + file, []string{"a socks5 127.0.0.1:1080", "b http localhost:3128"}},
		{"ipv6 server", `{"name":"v6","type":"socks5","server":"::1","port":1080}`, []string{"v6 socks5 [::1]:1080"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			nodes, err := proxydial.ParseNodes(tt.value)
			if err != nil {
				t.Fatalf("ParseNodes: %v", err)
			}
			var got []string
			for _, n := range nodes {
				got = append(got, n.Name()+" "+n.Type()+" "+n.Server())
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseNodesErrorsHideSecrets(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-Passw0rd"
	tests := []struct{ name, value, want string }{
		{"empty", "  ", "empty"},
		{"garbage", "not a node", "neither Clash YAML"},
		{"bad yaml", "name: [" + secret, "line"},
		{"bad link", "ss://" + secret, "line 1: ss link does not parse"},
		{"socks with path", "socks5://u:" + secret + "@127.0.0.1:1/x", "no path"},
		{"unknown type", `{"name":"n","type":"warp","server":"h","port":1,"password":"` + secret + `"}`, "unsupport proxy type"},
		{"wrong cipher", `{"name":"n","type":"ss","server":"h","port":1,"cipher":"rot13","password":"` + secret + `"}`, "rot13"},
		{"missing port", `{"name":"n","type":"ss","server":"h","cipher":"aes-256-gcm","password":"` + secret + `"}`, "port"},
		{"no name", `{"type":"socks5","server":"h","port":1,"password":"` + secret + `"}`, "name: must not be empty"},
		{"duplicate names", "{proxies: [{name: x, type: socks5, server: h, port: 1}, {name: x, type: socks5, server: h, port: 2}]}", "x: duplicate name"},
		{"second link bad", "socks5://h:1#x ss://" + secret, "line 2: ss link does not parse"},
		{"list of scalars", "- " + secret, "proxies[0]: not a map"},
		{"missing file", "@/nonexistent/" + secret, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := proxydial.ParseNodes(tt.value)
			if !errors.Is(err, clashnode.ErrInvalid) {
				t.Fatalf("err = %v, want clashnode.ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %q, want it to mention %q", err, tt.want)
			}
			if tt.name != "missing file" && strings.Contains(err.Error(), secret) {
				t.Errorf("err = %q echoes the secret", err)
			}
		})
	}
}

func TestDialContextRejectsBadTargets(t *testing.T) {
	t.Parallel()
	n, _ := clashnode.FromJSON("n", `{"type":"socks5","server":"127.0.0.1","port":1}`)
	d, _ := proxydial.NewDialer("test", []*clashnode.Node{n})
	for _, c := range []struct{ network, addr string }{
		{"udp", "127.0.0.1:53"}, {"tcp", "no-port"}, {"tcp", "host:0"}, {"tcp", "host:99999"}, {"tcp", ":80"},
	} {
		if _, err := d.DialContext(t.Context(), c.network, c.addr); err == nil || errors.Is(err, proxydial.ErrAllNodesFailed) {
			t.Errorf("DialContext(%s, %s) = %v, want a target error without dialing", c.network, c.addr, err)
		}
	}
}
