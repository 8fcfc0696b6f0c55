package upstream

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream/upstreamtest"
)

func TestBearerAnonymousTokenCachedPerScope(t *testing.T) {
	t.Parallel()
	f := newFixture("library/a", "library/b", "library/c")
	ta := upstreamtest.RequireBearer(f.reg, upstreamtest.WithService("registry.test"))
	srv := serve(t, ta)
	c := newTestClient(t, srv.URL, Registry{})
	ctx := testCtx(t)

	for range 3 {
		if _, err := c.Manifest(ctx, "library/a", "latest", false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Manifest(ctx, "library/a", "latest", true); err != nil {
		t.Fatal(err)
	}
	b, err := c.Blob(ctx, "library/a", f.blob)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, b.Body)
	b.Body.Close()
	if got := ta.TokensIssuedFor("repository:library/a:pull"); got != 1 {
		t.Errorf("tokens for library/a after 5 requests = %d, want 1", got)
	}

	if _, err := c.Manifest(ctx, "library/b", "latest", false); err != nil {
		t.Fatal(err)
	}
	if got := ta.TokensIssuedFor("repository:library/b:pull"); got != 1 {
		t.Errorf("tokens for library/b = %d, want 1", got)
	}

	// A burst of first requests for one repository shares one handshake.
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if _, err := c.Manifest(ctx, "library/c", "latest", false); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := ta.TokensIssuedFor("repository:library/c:pull"); got != 1 {
		t.Errorf("tokens for library/c after a burst of 10 = %d, want 1", got)
	}
	if got := ta.TokensIssued(); got != 3 {
		t.Errorf("tokens issued = %d, want 3", got)
	}
	for _, tr := range ta.TokenRequests() {
		if tr.User != "" || tr.Service != "registry.test" {
			t.Errorf("token request %+v, want anonymous for service registry.test", tr)
		}
	}
}

// TestBearerRefreshesExpiredToken runs client and registry in a synctest
// bubble over an in-memory network, so the token's one-second TTL passes
// on the fake clock: a nanosecond before it the token is reused, at it
// the registry refuses it and the client fetches a new one.
func TestBearerRefreshesExpiredToken(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := newFixture()
		const ttl = time.Second
		ta := upstreamtest.RequireBearer(f.reg, upstreamtest.WithTokenTTL(ttl))
		c := newTestClient(t, "http://registry.test", Registry{}, WithDialer(testkit.ServePipe(t, ta)))
		ctx := t.Context()
		start := time.Now()
		for _, tc := range []struct {
			at     time.Duration
			tokens int
		}{
			{0, 1},
			{ttl - time.Nanosecond, 1}, // still valid: reused
			{ttl, 2},                   // expired: 401, refreshed
		} {
			time.Sleep(time.Until(start.Add(tc.at)))
			if _, err := c.Manifest(ctx, testRepo, "latest", false); err != nil {
				t.Fatalf("at %v: %v", tc.at, err)
			}
			if got := ta.TokensIssued(); got != tc.tokens {
				t.Errorf("at %v: tokens issued = %d, want %d", tc.at, got, tc.tokens)
			}
		}
	})
}

func TestBasicAuth(t *testing.T) {
	t.Parallel()
	f := newFixture()
	srv := serve(t, upstreamtest.RequireBasic(f.reg, "bob", "s3cret"))
	tests := []struct {
		name       string
		user, pass string
		wantErr    error
	}{
		{"configured credentials", "bob", "s3cret", nil},
		{"anonymous", "", "", ErrUnauthorized},
		{"wrong password", "bob", "nope", ErrUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newTestClient(t, srv.URL, Registry{Username: tt.user, Password: tt.pass})
			m, err := c.Manifest(testCtx(t), testRepo, "latest", false)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && m.Digest != f.manifest) {
				t.Fatalf("Manifest = %v, %v; want error %v", m, err, tt.wantErr)
			}
			if tt.wantErr != nil && IsUnavailable(err) {
				t.Errorf("IsUnavailable(%v) = true for an auth failure", err)
			}
		})
	}
}

func TestBearerWithCredentials(t *testing.T) {
	t.Parallel()
	f := newFixture("team/secret")
	ta := upstreamtest.RequireBearer(f.reg, upstreamtest.WithUser("alice", "pa55"), upstreamtest.WithPrivate("team/"))
	srv := serve(t, ta)
	tests := []struct {
		name       string
		user, pass string
		wantErr    error
	}{
		{"credentials exchanged for a token", "alice", "pa55", nil},
		{"anonymous token lacks the private scope", "", "", ErrUnauthorized},
		{"wrong password at the token endpoint", "alice", "wrong", ErrUnauthorized},
	}
	t.Run("cases", func(t *testing.T) { // returns when its parallel subtests are done
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				c := newTestClient(t, srv.URL, Registry{Username: tt.user, Password: tt.pass})
				_, err := c.Manifest(testCtx(t), "team/secret", "latest", false)
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
			})
		}
	})
	var sawAlice bool
	for _, tr := range ta.TokenRequests() {
		sawAlice = sawAlice || tr.User == "alice"
	}
	if !sawAlice {
		t.Error("token endpoint never received alice's Basic credentials")
	}
}

// TestRedirectDoesNotLeakAuthorization: a blob redirected to object storage
// on another host must not carry the registry's credentials there.
func TestRedirectDoesNotLeakAuthorization(t *testing.T) {
	t.Parallel()
	var storageAuth atomic.Value
	storageAuth.Store("")
	storage := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		storageAuth.Store(r.Header.Get("Authorization"))
		_, _ = io.WriteString(w, testLayer)
	}))
	f := newFixture()
	redirecting := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/blobs/") {
			http.Redirect(w, r, storage.URL+"/bucket/object?X-Amz-Signature=abc", http.StatusTemporaryRedirect)
			return
		}
		f.reg.ServeHTTP(w, r)
	})
	tests := []struct {
		name  string
		front http.Handler
		reg   Registry
	}{
		{"bearer", upstreamtest.RequireBearer(redirecting, upstreamtest.WithUser("u", "p")), Registry{Username: "u", Password: "p"}},
		{"basic", upstreamtest.RequireBasic(redirecting, "u", "p"), Registry{Username: "u", Password: "p"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Not parallel: the subtests share the storage server's record.
			c := newTestClient(t, serve(t, tt.front).URL, tt.reg)
			b, err := c.Blob(testCtx(t), testRepo, f.blob)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(b.Body)
			b.Body.Close()
			if err != nil || string(body) != testLayer {
				t.Fatalf("body = %q, %v", body, err)
			}
			if got := storageAuth.Load().(string); got != "" {
				t.Errorf("redirect target received Authorization %q", got)
			}
		})
	}
}

// TestNoSecretsInLogsOrErrors runs the credentialed token flow with debug
// logging and checks that neither the password nor a token shows up.
func TestNoSecretsInLogsOrErrors(t *testing.T) {
	t.Parallel()
	f := newFixture()
	ta := upstreamtest.RequireBearer(f.reg, upstreamtest.WithUser("alice", "hunter2-password"))
	srv := serve(t, ta)
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewJSONHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var errs []string
	for _, pass := range []string{"hunter2-password", "wrong-hunter2"} {
		c := newTestClient(t, srv.URL, Registry{Username: "alice", Password: pass}, WithLogger(logger))
		if _, err := c.Manifest(testCtx(t), testRepo, "latest", false); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) != 1 {
		t.Fatalf("errors = %q, want exactly the wrong password to fail", errs)
	}
	mu.Lock()
	out := logs.String() + strings.Join(errs, "\n")
	mu.Unlock()
	if !strings.Contains(out, "upstream request") {
		t.Fatalf("no request was logged: %s", out)
	}
	for _, secret := range []string{"hunter2", "Bearer ", "Basic ", "Authorization"} {
		if strings.Contains(out, secret) {
			t.Errorf("logs or errors contain %q:\n%s", secret, out)
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestAuthCacheEvictsLeastRecentlyUsed(t *testing.T) {
	t.Parallel()
	a := newAuthCache(2, time.Hour)
	now := time.Now()
	for i, scope := range []string{"a", "b"} {
		e, build := a.acquire(scope, now.Add(time.Duration(i)*time.Second))
		if !build {
			t.Fatalf("%s: want build", scope)
		}
		a.finish(scope, e, http.DefaultTransport, nil)
	}
	if _, build := a.acquire("a", now.Add(3*time.Second)); build { // a is now the most recent
		t.Fatal("a: cached entry not reused")
	}
	e, _ := a.acquire("c", now.Add(4*time.Second)) // evicts b
	a.finish("c", e, http.DefaultTransport, nil)
	if a.len() != 2 {
		t.Fatalf("len = %d, want 2", a.len())
	}
	if _, build := a.acquire("a", now.Add(5*time.Second)); build {
		t.Error("a was evicted, want b evicted")
	}
	if _, build := a.acquire("b", now.Add(6*time.Second)); !build {
		t.Error("b still cached, want it evicted")
	}
}

func TestAuthCacheDropsFailuresAndExpired(t *testing.T) {
	t.Parallel()
	a := newAuthCache(10, time.Hour)
	now := time.Now()
	e, _ := a.acquire("x", now)
	a.finish("x", e, nil, errors.New("boom"))
	if _, build := a.acquire("x", now); !build {
		t.Error("failed handshake was cached")
	}
	e, _ = a.acquire("y", now)
	a.finish("y", e, http.DefaultTransport, nil)
	if _, build := a.acquire("y", now.Add(time.Minute)); build {
		t.Error("fresh entry not reused")
	}
	if _, build := a.acquire("y", now.Add(2*time.Hour)); !build {
		t.Error("expired entry reused")
	}
}

// TestRedirectFailureHidesPresignedQuery: when the object store fails, the
// error must not repeat the presigned URL's signature.
func TestRedirectFailureHidesPresignedQuery(t *testing.T) {
	t.Parallel()
	storage := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
	}))
	f := newFixture()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/blobs/") {
			http.Redirect(w, r, storage.URL+"/object?X-Amz-Signature=SECRETSIG", http.StatusTemporaryRedirect)
			return
		}
		f.reg.ServeHTTP(w, r)
	})
	c := newTestClient(t, serve(t, h).URL, Registry{})
	_, err := c.Blob(testCtx(t), testRepo, f.blob)
	if !IsUnavailable(err) {
		t.Fatalf("err = %v, want unavailable", err)
	}
	if strings.Contains(err.Error(), "SECRETSIG") || !strings.Contains(err.Error(), "/object") {
		t.Errorf("error %q: want the redirect path without its query", err)
	}
}

func TestHandshakeFailures(t *testing.T) {
	t.Parallel()
	f := newFixture()
	tests := []struct {
		name            string
		h               http.Handler
		wantUnavailable bool
	}{
		{"/v2/ answers 503", &faults{next: f.reg, path: "/v2/", pending: []int{503, 503, 503, 503, 503, 503, 503, 503}}, true},
		{"/v2/ answers 404 (not a registry)", &faults{next: f.reg, path: "/v2/", pending: []int{404, 404}}, false},
		{"token endpoint answers 500", &faults{next: upstreamtest.RequireBearer(f.reg), path: "/token", pending: []int{500}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newTestClient(t, serve(t, tt.h).URL, Registry{})
			_, err := c.Manifest(testCtx(t), testRepo, "latest", false)
			if err == nil || errors.Is(err, ErrNotFound) || IsUnavailable(err) != tt.wantUnavailable {
				t.Errorf("err = %v: want a non-NotFound error with IsUnavailable=%v", err, tt.wantUnavailable)
			}
			if !strings.Contains(err.Error(), "authenticate") {
				t.Errorf("err = %v: want it to say the handshake failed", err)
			}
		})
	}
}
