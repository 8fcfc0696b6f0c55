package main

import (
	"bytes"
	"errors"
	"flag"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		args    []string
		env     []string
		check   func(config) bool
		wantErr string
	}{
		{"defaults", nil, nil, func(c config) bool {
			return c.host.String() == "127.0.0.1" && c.statusListen == "127.0.0.1:9095" && c.probeWait == 2*time.Second && c.level == slog.LevelInfo
		}, ""},
		{"set", []string{"--listen-host=127.0.0.2", "--status-listen=127.0.0.1:1", "--reprobe=1m", "--log-level=debug"}, nil, func(c config) bool {
			return c.host.String() == "127.0.0.2" && c.reprobe == time.Minute && c.level == slog.LevelDebug
		}, ""},
		{"from the environment", []string{"--reprobe=2m"}, []string{"FORWARDER_REPROBE=1m", "FORWARDER_PROBE_WAIT=3s"}, func(c config) bool {
			return c.reprobe == 2*time.Minute && c.probeWait == 3*time.Second // the command line wins
		}, ""},
		{"bad environment value", nil, []string{"FORWARDER_PROBE_WAIT=soon"}, nil, "FORWARDER_PROBE_WAIT"},
		{"node address", []string{"--listen-host=10.0.0.1"}, nil, nil, "loopback only"},
		{"node address from the environment", nil, []string{"FORWARDER_LISTEN_HOST=10.0.0.1"}, nil, "loopback only"},
		{"status on all addresses", []string{"--status-listen=:9095"}, nil, nil, "want a loopback"},
		{"bad host", []string{"--listen-host=x"}, nil, nil, "--listen-host"},
		{"argument", []string{"x"}, nil, nil, "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := parseFlags(tc.args, tc.env, &bytes.Buffer{})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !tc.check(c) {
				t.Fatalf("parseFlags = %+v, %v", c, err)
			}
		})
	}
	var out bytes.Buffer
	if _, _, err := parseFlags([]string{"-h"}, nil, &out); !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "-probe-wait") {
		t.Fatalf("-h: %v\n%s", err, out.String())
	}
}
