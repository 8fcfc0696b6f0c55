package clashtest

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

// ProbeTarget is an HTTP server that answers like a registry without
// credentials: 401 with a Bearer challenge on /v2/ and everything under
// it. Hits counts the requests that reached it.
type ProbeTarget struct {
	*httptest.Server
	Hits atomic.Int64
}

// StartProbeTarget starts a ProbeTarget on loopback.
func StartProbeTarget(t testing.TB) *ProbeTarget {
	t.Helper()
	p := &ProbeTarget{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.Hits.Add(1)
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		w.Header().Set("WWW-Authenticate", `Bearer realm="http://127.0.0.1/token",service="test"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(p.Close)
	return p
}

// V2 is the target's /v2/ URL, the probe URL a control plane derives from
// an upstream.
func (p *ProbeTarget) V2() string { return p.URL + "/v2/" }

// Subscription serves a subscription body that a test can change. Its URL
// carries a random token in the path and the query, as real ones do, so
// tests can search responses and logs for it.
type Subscription struct {
	*httptest.Server
	// Token is the secret part of URL.
	Token string

	mu     sync.Mutex
	body   []byte
	status int
	hits   int
}

// StartSubscription serves body (changeable with Set) at a URL with a
// token.
func StartSubscription(t testing.TB, body []byte) *Subscription {
	t.Helper()
	s := &Subscription{Token: "subtoken-" + randomHex(t, 12), body: body, status: http.StatusOK}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		body, code := s.body, s.status
		s.hits++
		s.mu.Unlock()
		if r.URL.Path != "/sub/"+s.Token || r.URL.Query().Get("token") != s.Token {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(code)
		_, _ = w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

// SubURL is the subscription's secret URL.
func (s *Subscription) SubURL() string { return s.URL + "/sub/" + s.Token + "?token=" + s.Token }

// Set replaces the body and the status code served.
func (s *Subscription) Set(status int, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.body = status, body
}

// Hits counts the requests served.
func (s *Subscription) Hits() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
