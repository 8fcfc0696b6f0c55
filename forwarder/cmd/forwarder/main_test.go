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
		check   func(config) bool
		wantErr string
	}{
		{"defaults", nil, func(c config) bool {
			return c.host.String() == "127.0.0.1" && c.statusListen == "127.0.0.1:9095" && c.probeWait == 2*time.Second && c.level == slog.LevelInfo
		}, ""},
		{"set", []string{"--listen-host=127.0.0.2", "--status-listen=127.0.0.1:1", "--reprobe=1m", "--log-level=debug"}, func(c config) bool {
			return c.host.String() == "127.0.0.2" && c.reprobe == time.Minute && c.level == slog.LevelDebug
		}, ""},
		{"node address", []string{"--listen-host=10.0.0.1"}, nil, "loopback only"},
		{"status on all addresses", []string{"--status-listen=:9095"}, nil, "want a loopback"},
		{"bad host", []string{"--listen-host=x"}, nil, "--listen-host"},
		{"argument", []string{"x"}, nil, "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseFlags(tc.args, &bytes.Buffer{})
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
	if _, err := parseFlags([]string{"-h"}, &out); !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "-probe-wait") {
		t.Fatalf("-h: %v\n%s", err, out.String())
	}
}
