package probes

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestProbes(t *testing.T) {
	t.Parallel()
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("m 1\n")) })
	tests := []struct {
		name     string
		checks   map[string]Check
		path     string
		wantCode int
		wantBody string
	}{
		{"healthz ignores checks", map[string]Check{"grpc": func() error { return errors.New("down") }}, "/healthz", 200, "ok"},
		{"ready", map[string]Check{"grpc": func() error { return nil }}, "/readyz", 200, "ok"},
		{"not ready names the check", map[string]Check{"grpc": func() error { return nil }, "kubernetes": func() error { return errors.New("caches not synced") }},
			"/readyz", 503, "kubernetes: caches not synced"},
		{"metrics", nil, "/metrics", 200, "m 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := New(metrics, nil)
			for n, c := range tc.checks {
				s.AddCheck(n, c)
			}
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
			body, _ := io.ReadAll(rec.Body)
			if rec.Code != tc.wantCode || !strings.Contains(string(body), tc.wantBody) {
				t.Fatalf("GET %s = %d %q, want %d containing %q", tc.path, rec.Code, body, tc.wantCode, tc.wantBody)
			}
		})
	}
}
