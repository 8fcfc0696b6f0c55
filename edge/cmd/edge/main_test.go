package main

import (
	"os"
	"strings"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/proxydial"
)

func TestMain(m *testing.M) {
	proxydial.Setup()
	os.Exit(m.Run())
}

// TestProxyFlag: --proxy is repeatable, EDGE_PROXY is its default, and a
// bad value is a start-up error naming the flag without echoing secrets.
func TestProxyFlag(t *testing.T) {
	const secret = "pa55-w0rd-secret"
	good := "socks5://u:" + secret + "@127.0.0.1:1080#a"
	cfg, _, err := parseFlags([]string{"--proxy", good, "--proxy", `{"name":"b","type":"http","server":"127.0.0.1","port":3128}`})
	if err != nil || len(cfg.Proxy) != 2 {
		t.Fatalf("two --proxy: %v, %v", cfg.Proxy, err)
	}
	if nodes, err := cfg.ProxyNodes(); err != nil || len(nodes) != 2 || nodes[1].Name() != "b" {
		t.Fatalf("nodes %v, %v", nodes, err)
	}
	for _, tc := range []struct {
		name, env string
		args      []string
		want      string
	}{
		{"bad link", "", []string{"--proxy", "ss://" + secret}, "--proxy (value 1)"},
		{"second bad", "", []string{"--proxy", good, "--proxy", "{name: c, type: ss, password: " + secret + "}"}, "--proxy (value 2)"},
		{"duplicate", "", []string{"--proxy", good, "--proxy", good}, `"a" is given twice`},
		{"env", "nonsense " + secret, nil, "EDGE_PROXY: --proxy (value 1)"},
		{"timeout", "", []string{"--proxy-first-byte-timeout", "0s"}, "--proxy-first-byte-timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("EDGE_PROXY", tc.env)
			}
			_, _, err := parseFlags(tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("err = %v echoes the secret", err)
			}
		})
	}
	t.Setenv("EDGE_PROXY", good+"\nsocks5://127.0.0.1:1081#z")
	cfg, _, err = parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if nodes, _ := cfg.ProxyNodes(); len(nodes) != 2 {
		t.Fatalf("EDGE_PROXY with two links: %d nodes", len(nodes))
	}
}
