// Package upstreamtest holds test doubles of upstream registries: a
// Docker-Hub-like token service that fronts any registry handler
// (RequireBearer), a Basic-auth front (RequireBasic) and a small in-memory
// registry (Registry). They are plain http.Handlers, so they work behind
// httptest servers, real 127.0.0.1 listeners and as the front of a reverse
// proxy to a real registry (see ./tokenproxy).
package upstreamtest

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// StatsPath is where a TokenAuth reports its counters as JSON, for tests
// that run it in another process.
const StatsPath = "/_upstreamtest/stats"

// TokenAuth fronts a registry handler with the Docker token flow: /v2/...
// without a valid token gets 401 and a `WWW-Authenticate: Bearer realm=...,
// service=...,scope=repository:<name>:pull` challenge; the realm (served by
// the same handler, so it shares the registry's host:port as ggcr requires
// for loopback realms) issues HMAC-signed tokens scoped to repositories and
// actions; valid tokens are checked and stripped before the request is
// passed on.
type TokenAuth struct {
	next      http.Handler
	key       []byte
	service   string
	tokenPath string
	realm     string
	ttl       time.Duration
	users     map[string]string
	private   []string

	mu       sync.Mutex
	issued   map[string]int // requested scope → tokens issued
	requests []TokenRequest
}

// TokenRequest is one request the token endpoint answered.
type TokenRequest struct {
	User    string   // "" for anonymous
	Scopes  []string // as requested
	Service string
}

// TokenOption configures a TokenAuth.
type TokenOption func(*TokenAuth)

// WithService sets the service name of the challenge (default "upstreamtest").
func WithService(s string) TokenOption { return func(a *TokenAuth) { a.service = s } }

// WithTokenPath sets the path of the token endpoint (default "/token").
func WithTokenPath(p string) TokenOption { return func(a *TokenAuth) { a.tokenPath = p } }

// WithRealm sets an absolute realm URL. By default the realm is derived from
// each request's Host (and X-Forwarded-Proto/-Host), which is right for
// httptest servers and reverse proxies alike.
func WithRealm(u string) TokenOption { return func(a *TokenAuth) { a.realm = u } }

// WithTokenTTL sets the lifetime of issued tokens (default 5 min, as Docker
// Hub). Expired tokens get a 401 with error="invalid_token".
func WithTokenTTL(d time.Duration) TokenOption { return func(a *TokenAuth) { a.ttl = d } }

// WithUser adds credentials the token endpoint accepts as Basic auth. An
// authenticated user gets every action it asks for; anonymous gets pull.
func WithUser(user, pass string) TokenOption {
	return func(a *TokenAuth) { a.users[user] = pass }
}

// WithPrivate marks repositories that anonymous tokens never cover. A name
// ending in "/" is a prefix.
func WithPrivate(repos ...string) TokenOption {
	return func(a *TokenAuth) { a.private = append(a.private, repos...) }
}

// RequireBearer wraps next with a token service.
func RequireBearer(next http.Handler, opts ...TokenOption) *TokenAuth {
	a := &TokenAuth{
		next:      next,
		key:       make([]byte, 32),
		service:   "upstreamtest",
		tokenPath: "/token",
		ttl:       5 * time.Minute,
		users:     map[string]string{},
		issued:    map[string]int{},
	}
	_, _ = rand.Read(a.key)
	for _, o := range opts {
		o(a)
	}
	return a
}

// TokensIssued returns how many tokens the endpoint issued.
func (a *TokenAuth) TokensIssued() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.requests)
}

// TokensIssuedFor returns how many tokens were issued for a request that
// asked for scope (e.g. "repository:library/nginx:pull").
func (a *TokenAuth) TokensIssuedFor(scope string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.issued[scope]
}

// TokenRequests returns the answered token requests in order.
func (a *TokenAuth) TokenRequests() []TokenRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.requests)
}

// ServeHTTP implements http.Handler.
func (a *TokenAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == a.tokenPath:
		a.serveToken(w, r)
		return
	case r.URL.Path == StatsPath:
		a.serveStats(w)
		return
	case r.URL.Path != "/v2" && !strings.HasPrefix(r.URL.Path, "/v2/"):
		a.next.ServeHTTP(w, r)
		return
	}
	repo, action := requiredAccess(r)
	claims, problem := a.verify(r.Header.Get("Authorization"))
	if problem == "" && repo != "" && !claims.allows(repo, action) {
		problem = "insufficient_scope"
	}
	if problem != "" {
		a.challenge(w, r, repo, action, problem)
		return
	}
	r = r.Clone(r.Context())
	r.Header.Del("Authorization")
	a.next.ServeHTTP(w, r)
}

func (a *TokenAuth) challenge(w http.ResponseWriter, r *http.Request, repo, action, problem string) {
	v := `Bearer realm="` + a.realmFor(r) + `",service="` + a.service + `"`
	if repo != "" {
		v += `,scope="repository:` + repo + ":" + action + `"`
	}
	if problem != "missing" {
		v += `,error="` + problem + `"`
	}
	w.Header().Set("WWW-Authenticate", v)
	writeError(w, r, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
}

func (a *TokenAuth) realmFor(r *http.Request) string {
	if a.realm != "" {
		return a.realm
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p != "" {
		scheme = p
	}
	host := r.Host
	if h := r.Header.Get("X-Forwarded-Host"); h != "" {
		host = h
	}
	return scheme + "://" + host + a.tokenPath
}

// requiredAccess maps a /v2/ request to the repository and action a token
// must grant. /v2/ itself needs a valid token for any scope.
func requiredAccess(r *http.Request) (repo, action string) {
	action = "pull"
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		action = "push"
	}
	p := strings.TrimPrefix(r.URL.Path, "/v2/")
	for _, marker := range []string{"/blobs/uploads", "/blobs/", "/manifests/", "/tags/list"} {
		if i := strings.LastIndex(p, marker); i > 0 {
			return p[:i], action
		}
	}
	return "", action
}

func (a *TokenAuth) serveToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	user, pass, hasBasic := r.BasicAuth()
	if r.Method == http.MethodPost && r.PostForm.Get("grant_type") == "password" {
		user, pass, hasBasic = r.PostForm.Get("username"), r.PostForm.Get("password"), true
	}
	if hasBasic {
		want, ok := a.users[user]
		if !ok || subtle.ConstantTimeCompare([]byte(want), []byte(pass)) != 1 {
			writeError(w, r, http.StatusUnauthorized, "UNAUTHORIZED", "incorrect username or password")
			return
		}
	} else {
		user = ""
	}
	var scopes []string
	for _, s := range r.Form["scope"] {
		scopes = append(scopes, strings.Fields(s)...)
	}
	c := claims{Sub: user, ExpMillis: time.Now().Add(a.ttl).UnixMilli()}
	for _, s := range scopes {
		typ, rest, ok1 := strings.Cut(s, ":")
		i := strings.LastIndex(rest, ":")
		if !ok1 || typ != "repository" || i < 0 {
			continue
		}
		name, actions := rest[:i], strings.Split(rest[i+1:], ",")
		granted := actions
		if user == "" {
			granted = nil
			if !a.isPrivate(name) && slices.Contains(actions, "pull") {
				granted = []string{"pull"}
			}
		}
		if len(granted) > 0 {
			c.Access = append(c.Access, access{Type: "repository", Name: name, Actions: granted})
		}
	}
	tok := a.sign(c)
	a.mu.Lock()
	for _, s := range scopes {
		a.issued[s]++
	}
	a.requests = append(a.requests, TokenRequest{User: user, Scopes: scopes, Service: r.Form.Get("service")})
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token":        tok,
		"access_token": tok,
		"expires_in":   int(a.ttl / time.Second),
		"issued_at":    time.Now().UTC().Format(time.RFC3339),
	})
}

func (a *TokenAuth) serveStats(w http.ResponseWriter) {
	a.mu.Lock()
	body, _ := json.Marshal(map[string]any{"tokens_issued": len(a.requests), "by_scope": a.issued})
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

func (a *TokenAuth) isPrivate(name string) bool {
	for _, p := range a.private {
		if name == p || (strings.HasSuffix(p, "/") && strings.HasPrefix(name, p)) {
			return true
		}
	}
	return false
}

type claims struct {
	Sub    string   `json:"sub"`
	Access []access `json:"access"`
	// Milliseconds, not JWT's seconds: a TTL of one second must not expire
	// anywhere between 0 and 1 s after issue.
	ExpMillis int64  `json:"exp_ms"`
	Nonce     string `json:"jti"`
}

type access struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

func (c *claims) allows(repo, action string) bool {
	for _, ac := range c.Access {
		if ac.Name == repo && (slices.Contains(ac.Actions, action) || slices.Contains(ac.Actions, "*")) {
			return true
		}
	}
	return false
}

// sign makes "<base64 claims>.<base64 HMAC>". A random nonce keeps two
// tokens for the same scope distinct.
func (a *TokenAuth) sign(c claims) string {
	nonce := make([]byte, 8)
	_, _ = rand.Read(nonce)
	c.Nonce = base64.RawURLEncoding.EncodeToString(nonce)
	payload, _ := json.Marshal(c)
	p := base64.RawURLEncoding.EncodeToString(payload)
	return p + "." + base64.RawURLEncoding.EncodeToString(a.mac(p))
}

func (a *TokenAuth) mac(s string) []byte {
	m := hmac.New(sha256.New, a.key)
	m.Write([]byte(s))
	return m.Sum(nil)
}

// verify returns the token's claims, or the challenge error: "missing",
// "invalid_token".
func (a *TokenAuth) verify(authz string) (*claims, string) {
	tok, ok := strings.CutPrefix(authz, "Bearer ")
	if !ok || tok == "" {
		return nil, "missing"
	}
	p, sig, ok := strings.Cut(tok, ".")
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if !ok || err != nil || !hmac.Equal(got, a.mac(p)) {
		return nil, "invalid_token"
	}
	payload, err := base64.RawURLEncoding.DecodeString(p)
	var c claims
	if err != nil || json.Unmarshal(payload, &c) != nil || time.Now().UnixMilli() >= c.ExpMillis {
		return nil, "invalid_token"
	}
	return &c, ""
}

// RequireBasic wraps next with HTTP Basic auth on /v2/..., the way a
// private registry without a token service does it.
func RequireBasic(next http.Handler, user, pass string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(user)) != 1 || subtle.ConstantTimeCompare([]byte(p), []byte(pass)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="upstreamtest"`)
			writeError(w, r, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
			return
		}
		r = r.Clone(r.Context())
		r.Header.Del("Authorization")
		next.ServeHTTP(w, r)
	})
}

// writeError writes the OCI error JSON (headers only for HEAD).
func writeError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	body, _ := json.Marshal(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
