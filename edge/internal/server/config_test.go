package server

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRouteTable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		ups     []string
		wantErr string
	}{
		{"defaults", nil, ""},
		{"custom http", []string{"test=http://127.0.0.1:5001"}, ""},
		{"override dockerhub", []string{"dockerhub=http://127.0.0.1:5001"}, ""},
		{"no equals", []string{"test"}, "want PREFIX=URL"},
		{"path in URL", []string{"test=http://127.0.0.1:5001/v2"}, "no path"},
		{"bad scheme", []string{"test=ftp://x"}, "http:// or https://"},
		{"bad prefix", []string{"Te/st=http://x"}, "one lower-case path component"},
		{"credentials in URL", []string{"test=https://u:p@x.io"}, "must not carry credentials"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Config{Upstreams: tc.ups}.RouteTable()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "u:p") {
				t.Fatalf("error leaks credentials: %v", err)
			}
		})
	}
}

func TestLoadCredentials(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, file string
		ok         bool
	}{
		{"valid", write("ok.json", `{"ghcr":{"username":"u","password":"s3cret"}}`), true},
		{"unknown field", write("extra.json", `{"ghcr":{"user":"u","password":"s3cret"}}`), false},
		{"missing password", write("nopw.json", `{"ghcr":{"username":"u"}}`), false},
		{"not json", write("bad.json", `ghcr: {username: u}`), false},
		{"missing file", filepath.Join(dir, "absent.json"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Config{CredentialsFile: tc.file}.LoadCredentials()
			if tc.ok != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error leaks the password: %v", err)
			}
		})
	}
}

func TestOpenStoreRejects(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"s3://", "gs://bucket", "http://x"} {
		if _, _, err := (Config{Storage: s}).OpenStore(context.Background()); err == nil {
			t.Errorf("OpenStore(%q) accepted", s)
		}
	}
}
