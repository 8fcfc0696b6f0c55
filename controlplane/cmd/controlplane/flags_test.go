package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    flags
		wantErr string
	}{
		{"standalone defaults", []string{"--standalone", "--config", "c.yaml"}, nil,
			flags{standalone: true, config: "c.yaml", grpcListen: ":9090", debounce: 50 * time.Millisecond, logLevel: slog.LevelInfo}, ""},
		{"everything from the environment", nil, map[string]string{
			"CONTROLPLANE_STANDALONE": "true", "CONTROLPLANE_CONFIG": "e.yaml", "CONTROLPLANE_GRPC_LISTEN": "127.0.0.1:1",
			"CONTROLPLANE_STATE_DIR": "/s", "CONTROLPLANE_DEBOUNCE": "0s", "CONTROLPLANE_LOG_LEVEL": "debug",
		}, flags{standalone: true, config: "e.yaml", grpcListen: "127.0.0.1:1", stateDir: "/s", logLevel: slog.LevelDebug}, ""},
		{"flag beats environment", []string{"--grpc-listen", "127.0.0.1:2"}, map[string]string{
			"CONTROLPLANE_STANDALONE": "1", "CONTROLPLANE_CONFIG": "e.yaml", "CONTROLPLANE_GRPC_LISTEN": "127.0.0.1:1",
		}, flags{standalone: true, config: "e.yaml", grpcListen: "127.0.0.1:2", debounce: 50 * time.Millisecond}, ""},
		{"no standalone", []string{"--config", "c.yaml"}, nil, flags{}, "in-cluster mode is not implemented yet; use --standalone"},
		{"no config", []string{"--standalone"}, nil, flags{}, "--config FILE is required"},
		{"bad env bool", nil, map[string]string{"CONTROLPLANE_STANDALONE": "yes please"}, flags{}, "CONTROLPLANE_STANDALONE"},
		{"bad env duration", []string{"--standalone", "--config", "c"}, map[string]string{"CONTROLPLANE_DEBOUNCE": "soon"}, flags{}, "CONTROLPLANE_DEBOUNCE"},
		{"negative debounce", []string{"--standalone", "--config", "c", "--debounce", "-1s"}, nil, flags{}, "--debounce"},
		{"bad level", []string{"--standalone", "--config", "c", "--log-level", "loud"}, nil, flags{}, "--log-level"},
		{"half TLS", []string{"--standalone", "--config", "c", "--tls-cert", "c.pem"}, nil, flags{}, "--tls-cert and --tls-key"},
		{"stray argument", []string{"--standalone", "--config", "c", "extra"}, nil, flags{}, "unexpected arguments"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			got, err := parseFlags(tc.args, lookup, &bytes.Buffer{})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestHelpDocumentsEveryFlag(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	_, err := parseFlags([]string{"--help"}, func(string) (string, bool) { return "", false }, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v", err)
	}
	for _, f := range []string{"-standalone", "-config", "-grpc-listen", "-state-dir", "-debounce", "-log-level", "-tls-cert", "-tls-key", "CONTROLPLANE_"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("--help does not mention %s", f)
		}
	}
}

func TestRunStartsAndStops(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := dir + "/controlplane.yaml"
	if err := os.WriteFile(cfg, []byte("adminTokens: [admin-token-0123456789]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f := flags{standalone: true, config: cfg, grpcListen: "127.0.0.1:0", debounce: time.Millisecond}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- run(ctx, f, log) }()
	time.Sleep(200 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop")
	}

	f.config = dir + "/missing.yaml"
	if err := run(t.Context(), f, log); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing config: %v", err)
	}
}
