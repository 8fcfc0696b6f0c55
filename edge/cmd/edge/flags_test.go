package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/server"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/clashnode"
)

func TestMain(m *testing.M) {
	clashnode.Setup()
	os.Exit(m.Run())
}

// TestProxyFlag: --proxy is repeatable, EDGE_PROXY is its default, and a
// bad value is a start-up error naming the flag without echoing secrets.
func TestProxyFlag(t *testing.T) {
	t.Parallel()
	const secret = "pa55-w0rd-secret"
	good := "socks5://u:" + secret + "@127.0.0.1:1080#a"
	cfg, _, _, err := parseFlags([]string{"--proxy", good, "--proxy", `{"name":"b","type":"http","server":"127.0.0.1","port":3128}`}, nil, io.Discard)
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
			t.Parallel()
			var env []string
			if tc.env != "" {
				env = []string{"EDGE_PROXY=" + tc.env}
			}
			_, _, _, err := parseFlags(tc.args, env, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("err = %v echoes the secret", err)
			}
		})
	}
	cfg, _, _, err = parseFlags(nil, []string{"EDGE_PROXY=" + good + "\nsocks5://127.0.0.1:1081#z"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if nodes, _ := cfg.ProxyNodes(); len(nodes) != 2 {
		t.Fatalf("EDGE_PROXY with two links: %d nodes", len(nodes))
	}
}

// TestEnvironment: EDGE_<FLAG> under the command line, lists replaced
// (not appended to), bad values refused with the variable's name, and
// variables that name no flag reported.
func TestEnvironment(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		args, env []string
		check     func(t *testing.T, got parsed)
		wantErr   string
	}{
		{name: "defaults", check: func(t *testing.T, got parsed) {
			if got.cfg.Listen != ":5000" || got.cfg.Storage != "./data" || got.cfg.TagTTL != 5*time.Minute || got.cfg.Upstreams != nil || got.cfg.S3PathStyle {
				t.Errorf("defaults: %+v", got.cfg)
			}
		}},
		{name: "environment", env: []string{"EDGE_LISTEN=127.0.0.1:1", "EDGE_TAG_TTL=1m", "EDGE_S3_PATH_STYLE=true", "EDGE_MAX_CONNECTIONS=7",
			"EDGE_UPSTREAM=a=http://a, b=http://b", "EDGE_ALLOW_INTERNAL_REDIRECTS=a,b"}, check: func(t *testing.T, got parsed) {
			c := got.cfg
			if c.Listen != "127.0.0.1:1" || c.TagTTL != time.Minute || !c.S3PathStyle || c.MaxConnections != 7 ||
				!reflect.DeepEqual(c.Upstreams, []string{"a=http://a", "b=http://b"}) || !reflect.DeepEqual(c.InternalRedirects, []string{"a", "b"}) {
				t.Errorf("from the environment: %+v", c)
			}
		}},
		{name: "command line wins", args: []string{"--listen", "127.0.0.1:2", "--upstream", "c=http://c", "--tag-ttl", "2m"},
			env: []string{"EDGE_LISTEN=127.0.0.1:1", "EDGE_UPSTREAM=a=http://a,b=http://b", "EDGE_TAG_TTL=soon"}, check: func(t *testing.T, got parsed) {
				if got.cfg.Listen != "127.0.0.1:2" || !reflect.DeepEqual(got.cfg.Upstreams, []string{"c=http://c"}) || got.cfg.TagTTL != 2*time.Minute {
					t.Errorf("command line: %+v", got.cfg)
				}
			}},
		{name: "unknown variable", env: []string{"EDGE_LISTN=:1", "EDGEWISE=x"}, check: func(t *testing.T, got parsed) {
			if !reflect.DeepEqual(got.unknown, []string{"EDGE_LISTN"}) {
				t.Errorf("unknown = %v", got.unknown)
			}
		}},
		{name: "bad boolean", env: []string{"EDGE_S3_PATH_STYLE=yes please"}, wantErr: "EDGE_S3_PATH_STYLE (flag -s3-path-style)"},
		{name: "bad duration", env: []string{"EDGE_STATS_INTERVAL=often"}, wantErr: "EDGE_STATS_INTERVAL (flag -stats-interval)"},
		{name: "bad number", env: []string{"EDGE_MAX_UPSTREAM_RPS=lots"}, wantErr: "EDGE_MAX_UPSTREAM_RPS (flag -max-upstream-rps)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, _, res, err := parseFlags(tc.args, tc.env, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, parsed{cfg: cfg, unknown: res.Unknown})
		})
	}
}

// parsed is what a TestEnvironment case checks.
type parsed struct {
	cfg     server.Config
	unknown []string
}

// TestHelp: --help states the environment rules and every list
// variable's separator, and mentions every flag.
func TestHelp(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if _, _, _, err := parseFlags([]string{"--help"}, nil, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{"EDGE_<FLAG>", "command line wins", "EDGE_UPSTREAM and\nEDGE_ALLOW_INTERNAL_REDIRECTS are comma-separated, EDGE_PROXY is one value",
		"names no\nflag is logged", "-listen", "-upstream", "-proxy", "-allow-internal-redirects", "-storage-grant-ttl", "-log-level"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help does not say %q", want)
		}
	}
}
