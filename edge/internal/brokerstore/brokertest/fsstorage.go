package brokertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/fs"
)

// FSStorage is a filesystem store whose presigned URLs a real HTTP server
// answers like S3 does: a random signature per URL, 403 once it expired or
// was revoked, Range and 416 as http.ServeContent does them.
type FSStorage struct {
	*fs.Store
	srv *httptest.Server

	mu   sync.Mutex
	urls map[string]signed // signature → what it signs

	// Gets counts the GETs of presigned URLs.
	Gets atomic.Int64
}

type signed struct {
	key     string
	expires time.Time
}

// NewFSStorage returns an empty FSStorage in a temporary directory, closed
// when the test ends.
func NewFSStorage(t testing.TB) *FSStorage {
	t.Helper()
	st, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := &FSStorage{Store: st, urls: map[string]signed{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

// Presign implements Storage.
func (s *FSStorage) Presign(_ context.Context, key string, ttl time.Duration) (string, time.Time, error) {
	var sig [16]byte
	_, _ = rand.Read(sig[:])
	token := hex.EncodeToString(sig[:])
	expires := time.Now().Add(ttl)
	s.mu.Lock()
	s.urls[token] = signed{key: key, expires: expires}
	s.mu.Unlock()
	return s.srv.URL + "/o?sig=" + token, expires, nil
}

// Revoke makes every URL signed so far answer 403, as expired ones do.
func (s *FSStorage) Revoke() {
	s.mu.Lock()
	s.urls = map[string]signed{}
	s.mu.Unlock()
}

// URL is the base URL of the HTTP server.
func (s *FSStorage) URL() string { return s.srv.URL }

// Client is an HTTP client for the server.
func (s *FSStorage) Client() *http.Client { return s.srv.Client() }

// Close stops the HTTP server: presigned reads fail to connect.
func (s *FSStorage) Close() { s.srv.Close() }

func (s *FSStorage) serve(w http.ResponseWriter, r *http.Request) {
	s.Gets.Add(1)
	s.mu.Lock()
	sg, ok := s.urls[r.URL.Query().Get("sig")]
	s.mu.Unlock()
	if !ok || time.Now().After(sg.expires) {
		http.Error(w, "AccessDenied: Request has expired", http.StatusForbidden)
		return
	}
	rc, err := s.Open(r.Context(), sg.key, 0, -1)
	if errors.Is(err, blob.ErrNotFound) {
		http.Error(w, "NoSuchKey", http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
}
