package registry

import (
	"bytes"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
)

const pullToken = "pt-5f0c9e1d" // distinctive, so a leak into logs or bodies is found

func basic(user, pass string) map[string]string {
	req, _ := http.NewRequest("GET", "/", nil)
	req.SetBasicAuth(user, pass)
	return map[string]string{"Authorization": req.Header.Get("Authorization")}
}

func TestPullToken(t *testing.T) {
	t.Parallel()
	f := newPolicyFixture(t, NewPolicy(nil, pullToken), nil)
	body := []byte(`{"schemaVersion":2}`)
	f.upstream.PutManifest("library/app", "v1", oci.MediaTypeOCIManifest, body)
	tests := []struct {
		name, method, path string
		hdr                map[string]string
		status             int
	}{
		{"no auth base", "GET", "/v2/", nil, 401},
		{"no auth manifest", "GET", "/v2/test/library/app/manifests/v1", nil, 401},
		{"no auth HEAD", "HEAD", "/v2/test/library/app/manifests/v1", nil, 401},
		{"no auth push", "POST", "/v2/test/app/blobs/uploads/", nil, 401},
		{"no auth unknown prefix", "GET", "/v2/nosuch/a/b/manifests/x", nil, 401},
		{"wrong token", "GET", "/v2/test/library/app/manifests/v1", basic("x", "pt-5f0c9e1e"), 401},
		{"token as username", "GET", "/v2/test/library/app/manifests/v1", basic(pullToken, ""), 401},
		{"token prefix", "GET", "/v2/test/library/app/manifests/v1", basic("x", pullToken[:4]), 401},
		{"bearer instead of basic", "GET", "/v2/test/library/app/manifests/v1", map[string]string{"Authorization": "Bearer " + pullToken}, 401},
		{"right token base", "GET", "/v2/", basic("edge", pullToken), 200},
		{"right token manifest", "GET", "/v2/test/library/app/manifests/v1", basic("any-user", pullToken), 200},
		{"right token empty user", "HEAD", "/v2/test/library/app/manifests/v1", basic("", pullToken), 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp, got := f.do(t, tc.method, tc.path, tc.hdr)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.status, got)
			}
			if tc.status != 401 {
				return
			}
			if ch := resp.Header.Get("WWW-Authenticate"); ch != `Basic realm="k8s-selfhost-repo"` {
				t.Fatalf("WWW-Authenticate = %q", ch)
			}
			if tc.method != "HEAD" && errorCode(t, got) != "UNAUTHORIZED" {
				t.Fatalf("body %s", got)
			}
			if bytes.Contains(got, []byte(pullToken)) {
				t.Fatal("response leaks the pull token")
			}
		})
	}
}

// TestPullTokenNotLogged runs requests through a handler whose logger
// records everything, with and without the token.
func TestPullTokenNotLogged(t *testing.T) {
	t.Parallel()
	logs := &syncWriter{w: &bytes.Buffer{}}
	f := newPolicyFixture(t, NewPolicy(nil, pullToken), slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	f.upstream.PutBlob("app", []byte("x"))
	for _, hdr := range []map[string]string{nil, basic("u", "wrong"), basic("u", pullToken)} {
		f.do(t, "GET", "/v2/test/app/manifests/missing", hdr)
		f.do(t, "GET", "/v2/test/app/blobs/sha256:"+strings.Repeat("0", 64), hdr)
	}
	if strings.Contains(logs.String(), pullToken) || strings.Contains(logs.String(), "Authorization") {
		t.Fatalf("logs leak the token or the header:\n%s", logs.String())
	}
}

// syncWriter serialises writes from the handler's and the fill's goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

func TestAllowedPrefixes(t *testing.T) {
	t.Parallel()
	f := newPolicyFixture(t, NewPolicy([]string{"test"}, ""), nil)
	f.upstream.PutManifest("library/app", "v1", oci.MediaTypeOCIManifest, []byte(`{"schemaVersion":2}`))
	tests := []struct {
		name, path string
		status     int
		code       string
	}{
		{"allowed", "/v2/test/library/app/manifests/v1", 200, ""},
		{"base always", "/v2/", 200, ""},
		{"other prefix", "/v2/ghcr/org/app/manifests/v1", 404, "NAME_UNKNOWN"},
		{"alias of other prefix", "/v2/quayio/org/app/manifests/v1", 404, "NAME_UNKNOWN"},
		{"mirror mode is dockerhub", "/v2/library/nginx/manifests/latest", 404, "NAME_UNKNOWN"},
		{"ns host of other prefix", "/v2/org/app/manifests/v1?ns=ghcr.io", 404, "NAME_UNKNOWN"},
		{"tags of other prefix", "/v2/k8s/pause/tags/list", 404, "NAME_UNKNOWN"},
		{"blob of other prefix", "/v2/ghcr/org/app/blobs/sha256:" + strings.Repeat("a", 64), 404, "NAME_UNKNOWN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp, body := f.do(t, "GET", tc.path, nil)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.status, body)
			}
			if tc.code == "" {
				return
			}
			if got := errorCode(t, body); got != tc.code {
				t.Fatalf("code %s, want %s", got, tc.code)
			}
			if !strings.Contains(string(body), "prefix not allowed for this namespace") {
				t.Fatalf("message %s", body)
			}
		})
	}
}

func TestPolicyZeroAllowsAll(t *testing.T) {
	t.Parallel()
	var p Policy
	if !p.Allows("anything") || p.RequiresToken() {
		t.Fatal("zero Policy restricts")
	}
	if p := NewPolicy(nil, ""); !p.Allows("x") || p.RequiresToken() {
		t.Fatal("empty NewPolicy restricts")
	}
}
