package upstreamtest_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream/upstreamtest"
)

func fetchToken(t *testing.T, srvURL, scope, user, pass string) (int, string) {
	t.Helper()
	return fetchTokenWith(t, http.DefaultClient, srvURL, scope, user, pass)
}

func fetchTokenWith(t *testing.T, client *http.Client, srvURL, scope, user, pass string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, srvURL+"/token?service=upstreamtest&scope="+url.QueryEscape(scope), nil)
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Token     string `json:"token"`
		ExpiresIn int    `json:"expires_in"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Token
}

func get(t *testing.T, u, token string) *http.Response {
	t.Helper()
	return getWith(t, http.DefaultClient, u, token)
}

func getWith(t *testing.T, client *http.Client, u, token string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func TestRequireBearer(t *testing.T) {
	t.Parallel()
	reg := upstreamtest.NewRegistry()
	reg.PutManifest("pub/app", "v1", oci.MediaTypeOCIManifest, []byte("{}"))
	reg.PutManifest("team/secret", "v1", oci.MediaTypeOCIManifest, []byte("{}"))
	ta := upstreamtest.RequireBearer(reg, upstreamtest.WithUser("alice", "pw"), upstreamtest.WithPrivate("team/"), upstreamtest.WithService("svc"))
	srv := httptest.NewServer(ta)
	defer srv.Close()

	resp := get(t, srv.URL+"/v2/pub/app/manifests/v1", "")
	wantChallenge := `Bearer realm="` + srv.URL + `/token",service="svc",scope="repository:pub/app:pull"`
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != wantChallenge {
		t.Fatalf("no token: %d %q, want 401 %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), wantChallenge)
	}
	if got := get(t, srv.URL+"/v2/", "").Header.Get("WWW-Authenticate"); strings.Contains(got, "scope=") {
		t.Errorf("/v2/ challenge %q carries a scope", got)
	}

	_, anon := fetchToken(t, srv.URL, "repository:pub/app:pull", "", "")
	_, anonSecret := fetchToken(t, srv.URL, "repository:team/secret:pull", "", "")
	_, alice := fetchToken(t, srv.URL, "repository:team/secret:pull", "alice", "pw")
	if code, _ := fetchToken(t, srv.URL, "repository:team/secret:pull", "alice", "bad"); code != 401 {
		t.Errorf("wrong password: token endpoint answered %d", code)
	}
	tests := []struct {
		name, path, token string
		want              int
		wantErr           string
	}{
		{"anonymous token, public repo", "/v2/pub/app/manifests/v1", anon, 200, ""},
		{"any valid token opens /v2/", "/v2/", anon, 200, ""},
		{"token for another repo", "/v2/team/secret/manifests/v1", anon, 401, "insufficient_scope"},
		{"anonymous token on a private repo", "/v2/team/secret/manifests/v1", anonSecret, 401, "insufficient_scope"},
		{"credentialed token on a private repo", "/v2/team/secret/manifests/v1", alice, 200, ""},
		{"forged token", "/v2/pub/app/manifests/v1", anon + "x", 401, "invalid_token"},
	}
	for _, tt := range tests {
		resp := get(t, srv.URL+tt.path, tt.token)
		if resp.StatusCode != tt.want || !strings.Contains(resp.Header.Get("WWW-Authenticate"), tt.wantErr) {
			t.Errorf("%s: %d %q, want %d with %q", tt.name, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), tt.want, tt.wantErr)
		}
	}
	if ta.TokensIssued() != 3 || ta.TokensIssuedFor("repository:team/secret:pull") != 2 {
		t.Errorf("issued %d, for team/secret %d", ta.TokensIssued(), ta.TokensIssuedFor("repository:team/secret:pull"))
	}

	statsResp, err := http.Get(srv.URL + upstreamtest.StatsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer statsResp.Body.Close()
	var stats struct {
		TokensIssued int            `json:"tokens_issued"`
		ByScope      map[string]int `json:"by_scope"`
	}
	if err := json.NewDecoder(statsResp.Body).Decode(&stats); err != nil || stats.TokensIssued != 3 || stats.ByScope["repository:pub/app:pull"] != 1 {
		t.Errorf("stats = %+v, %v", stats, err)
	}
}

// TestRequireBearerExpiry runs the token service in a synctest bubble
// over an in-memory network: the token is accepted a nanosecond before
// its TTL and refused at it, on the fake clock.
func TestRequireBearerExpiry(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const ttl = time.Second
		ta := upstreamtest.RequireBearer(upstreamtest.NewRegistry(), upstreamtest.WithTokenTTL(ttl))
		client := &http.Client{Transport: &http.Transport{DialContext: testkit.ServePipe(t, ta)}}
		const srvURL = "http://registry.test"
		start := time.Now()
		_, tok := fetchTokenWith(t, client, srvURL, "repository:a/b:pull", "", "")
		time.Sleep(ttl - time.Nanosecond)
		if resp := getWith(t, client, srvURL+"/v2/", tok); resp.StatusCode != 200 {
			t.Errorf("1ns before expiry: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		time.Sleep(time.Until(start.Add(ttl)))
		if resp := getWith(t, client, srvURL+"/v2/", tok); resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "invalid_token") {
			t.Errorf("expired token: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		client.CloseIdleConnections()
	})
}

// TestBehindReverseProxy fronts a separate registry server through
// httputil.ReverseProxy, the way the end-to-end tests front Debian's
// docker-registry, and pulls through it with the upstream client.
func TestBehindReverseProxy(t *testing.T) {
	t.Parallel()
	reg := upstreamtest.NewRegistry()
	md := reg.PutManifest("library/busybox", "latest", oci.MediaTypeDockerManifest, []byte(`{"schemaVersion":2}`))
	bd := reg.PutBlob("library/busybox", []byte("layer"))
	backend := httptest.NewServer(reg)
	defer backend.Close()
	target, _ := url.Parse(backend.URL)
	ta := upstreamtest.RequireBearer(httputil.NewSingleHostReverseProxy(target))
	front := httptest.NewServer(ta)
	defer front.Close()

	u, _ := url.Parse(front.URL)
	c, err := upstream.New(upstream.Registry{Prefix: "proxied", URL: u})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := c.Manifest(ctx, "library/busybox", "latest", false)
	if err != nil || m.Digest != md || m.ContentType != oci.MediaTypeDockerManifest {
		t.Fatalf("manifest %+v, %v", m, err)
	}
	b, err := c.Blob(ctx, "library/busybox", bd)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(b.Body)
	b.Body.Close()
	if string(body) != "layer" || ta.TokensIssued() != 1 {
		t.Errorf("blob %q, tokens %d", body, ta.TokensIssued())
	}
	if got := reg.Hits(http.MethodGet, "/v2/library/busybox/manifests/latest"); got != 1 {
		t.Errorf("backend manifest hits = %d", got)
	}
}

func TestRequireBearerRealmFromForwardedHeaders(t *testing.T) {
	t.Parallel()
	ta := upstreamtest.RequireBearer(upstreamtest.NewRegistry())
	req := httptest.NewRequest(http.MethodGet, "http://inner:5000/v2/", nil)
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("X-Forwarded-Host", "registry.example")
	rec := httptest.NewRecorder()
	ta.ServeHTTP(rec, req)
	if got := rec.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, `Bearer realm="https://registry.example/token"`) {
		t.Errorf("challenge %q", got)
	}
}
