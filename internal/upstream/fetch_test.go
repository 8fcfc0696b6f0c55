package upstream

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream/upstreamtest"
)

func TestManifestGetAndHead(t *testing.T) {
	t.Parallel()
	f := newFixture()
	srv := serve(t, upstreamtest.RequireBearer(f.reg))
	c := newTestClient(t, srv.URL, Registry{})
	ctx := testCtx(t)
	tests := []struct {
		name string
		ref  string
		head bool
	}{
		{"GET by tag", "latest", false},
		{"GET by digest", f.manifest.String(), false},
		{"HEAD by tag", "latest", true},
		{"HEAD by digest", f.manifest.String(), true},
	}
	for _, tt := range tests {
		m, err := c.Manifest(ctx, testRepo, tt.ref, tt.head)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		wantBody := []byte(testManifest)
		if tt.head {
			wantBody = nil
		}
		if !bytes.Equal(m.Body, wantBody) || m.Digest != f.manifest || m.Size != int64(len(testManifest)) || m.ContentType != oci.MediaTypeOCIManifest {
			t.Errorf("%s: got %+v", tt.name, m)
		}
	}
	if got := f.reg.Hits(http.MethodGet, manifestPath(testRepo, "latest")); got != 1 {
		t.Errorf("GET by tag hits = %d, want 1 (HEAD must not GET)", got)
	}
	if got := f.reg.Hits(http.MethodHead, manifestPath(testRepo, "latest")); got != 1 {
		t.Errorf("HEAD hits = %d, want 1", got)
	}
}

func TestManifestAcceptHeader(t *testing.T) {
	t.Parallel()
	var accept, ua atomic.Value
	f := newFixture()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/manifests/") {
			accept.Store(r.Header.Get("Accept"))
			ua.Store(r.Header.Get("User-Agent"))
		}
		f.reg.ServeHTTP(w, r)
	})
	srv := serve(t, h)
	for _, tt := range []struct{ opt, want string }{{"", "k8s-selfhost-repo-edge"}, {"custom/1.0", "custom/1.0"}} {
		var opts []Option
		if tt.opt != "" {
			opts = append(opts, WithUserAgent(tt.opt))
		}
		c := newTestClient(t, srv.URL, Registry{}, opts...)
		if _, err := c.Manifest(testCtx(t), testRepo, "latest", false); err != nil {
			t.Fatal(err)
		}
		if got := accept.Load(); got != oci.ManifestAccept {
			t.Errorf("Accept = %q, want %q", got, oci.ManifestAccept)
		}
		if got := ua.Load(); got != tt.want {
			t.Errorf("User-Agent = %q, want %q", got, tt.want)
		}
	}
}

func TestNotFound(t *testing.T) {
	t.Parallel()
	f := newFixture()
	srv := serve(t, upstreamtest.RequireBearer(f.reg))
	c := newTestClient(t, srv.URL, Registry{})
	ctx := testCtx(t)
	missing := oci.FromBytes([]byte("missing"))
	calls := map[string]func() error{
		"manifest by tag":    func() error { _, err := c.Manifest(ctx, testRepo, "nope", false); return err },
		"manifest by digest": func() error { _, err := c.Manifest(ctx, testRepo, missing.String(), false); return err },
		"manifest HEAD":      func() error { _, err := c.Manifest(ctx, testRepo, "nope", true); return err },
		"blob":               func() error { _, err := c.Blob(ctx, testRepo, missing); return err },
		"tags":               func() error { _, err := c.Tags(ctx, "library/none", nil); return err },
	}
	for name, call := range calls {
		err := call()
		if !errors.Is(err, ErrNotFound) || IsUnavailable(err) {
			t.Errorf("%s: err = %v, want ErrNotFound and not unavailable", name, err)
		}
		if !strings.Contains(err.Error(), srv.Listener.Addr().String()+"/") {
			t.Errorf("%s: error %q does not name host and repository", name, err)
		}
	}
}

func TestManifestTooLarge(t *testing.T) {
	t.Parallel()
	big := bytes.Repeat([]byte("x"), oci.MaxManifestSize+1)
	tests := []struct {
		name    string
		chunked bool
		head    bool
	}{
		{"Content-Length announced", false, false},
		{"chunked body", true, false},
		{"HEAD", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/v2/" {
					return
				}
				w.Header().Set("Content-Type", oci.MediaTypeOCIManifest)
				if !tt.chunked {
					w.Header().Set("Content-Length", strconv.Itoa(len(big)))
				}
				if r.Method == http.MethodGet {
					_, _ = w.Write(big)
				}
			}))
			c := newTestClient(t, srv.URL, Registry{})
			_, err := c.Manifest(testCtx(t), testRepo, "latest", tt.head)
			if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), strconv.Itoa(oci.MaxManifestSize)) {
				t.Errorf("err = %v, want ErrTooLarge naming the limit", err)
			}
		})
	}
}

func TestManifestDigestVerification(t *testing.T) {
	t.Parallel()
	body := []byte(testManifest)
	good := oci.FromBytes(body)
	other := oci.FromBytes([]byte("other"))
	tests := []struct {
		name    string
		header  string // Docker-Content-Digest sent
		ref     string
		head    bool
		wantErr error
	}{
		{"header matches", good.String(), "latest", false, nil},
		{"no header, digest computed", "", "latest", false, nil},
		{"header lies", other.String(), "latest", false, ErrDigestMismatch},
		{"reference digest differs from body", "", other.String(), false, ErrDigestMismatch},
		{"HEAD header differs from reference", good.String(), other.String(), true, ErrDigestMismatch},
		{"malformed header", "sha256:XYZ", "latest", false, oci.ErrInvalidDigest},
		{"malformed header on HEAD", "md5:abc", "latest", true, oci.ErrInvalidDigest},
		{"malformed reference", "", "sha256:short", false, oci.ErrInvalidDigest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/v2/" {
					return
				}
				w.Header().Set("Content-Type", oci.MediaTypeOCIManifest)
				if tt.header != "" {
					w.Header().Set("Docker-Content-Digest", tt.header)
				}
				_, _ = w.Write(body)
			}))
			c := newTestClient(t, srv.URL, Registry{})
			m, err := c.Manifest(testCtx(t), testRepo, tt.ref, tt.head)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && m.Digest != good {
				t.Errorf("digest = %s, want %s", m.Digest, good)
			}
			if tt.wantErr != nil && IsUnavailable(err) {
				t.Errorf("IsUnavailable(%v) = true", err)
			}
		})
	}
}

func TestHeadWithoutDigestHeader(t *testing.T) {
	t.Parallel()
	srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", oci.MediaTypeDockerManifest)
		w.Header().Set("Content-Length", "42")
	}))
	c := newTestClient(t, srv.URL, Registry{})
	m, err := c.Manifest(testCtx(t), testRepo, "v1", true)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Digest.IsZero() || m.Size != 42 || m.Body != nil || m.ContentType != oci.MediaTypeDockerManifest {
		t.Errorf("got %+v, want zero digest, size 42, no body", m)
	}
}

func TestBlob(t *testing.T) {
	t.Parallel()
	f := newFixture()
	chunked := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/blobs/") {
			w.(http.Flusher).Flush() // headers before the body: no Content-Length
			_, _ = io.WriteString(w, testLayer)
			return
		}
		f.reg.ServeHTTP(w, r)
	})
	tests := []struct {
		name     string
		h        http.Handler
		wantSize int64
	}{
		{"with Content-Length", upstreamtest.RequireBearer(f.reg), int64(len(testLayer))},
		{"chunked", chunked, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newTestClient(t, serve(t, tt.h).URL, Registry{})
			b, err := c.Blob(testCtx(t), testRepo, f.blob)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Body.Close()
			got, err := io.ReadAll(b.Body)
			if err != nil || string(got) != testLayer || b.Size != tt.wantSize {
				t.Errorf("body %q size %d err %v; want size %d", got, b.Size, err, tt.wantSize)
			}
		})
	}
}

// TestBrokenBodies: a manifest whose body breaks is fetched again (nothing
// was handed out); a blob body that breaks is the caller's, reported as
// unavailable and not re-requested.
func TestBrokenBodies(t *testing.T) {
	t.Parallel()
	f := newFixture()
	var mu sync.Mutex
	hits := map[string]int{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits[r.URL.Path]++
		n := hits[r.URL.Path]
		mu.Unlock()
		if r.URL.Path != "/v2/" && (n == 1 || strings.Contains(r.URL.Path, "/blobs/")) {
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		f.reg.ServeHTTP(w, r)
	})
	c := newTestClient(t, serve(t, h).URL, Registry{})
	ctx := testCtx(t)
	if m, err := c.Manifest(ctx, testRepo, "latest", false); err != nil || m.Digest != f.manifest {
		t.Errorf("manifest after a broken first body: %v, %v", m, err)
	}
	b, err := c.Blob(ctx, testRepo, f.blob)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(b.Body)
	b.Body.Close()
	if !IsUnavailable(err) {
		t.Errorf("blob read error %v: IsUnavailable = false", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := hits[blobPath(testRepo, f.blob)]; got != 1 {
		t.Errorf("blob requested %d times, want 1 (never retried after the body was handed out)", got)
	}
}

func TestTagsPassThrough(t *testing.T) {
	t.Parallel()
	f := upstreamtest.NewRegistry()
	for _, tag := range []string{"a", "b", "c", "d"} {
		f.PutManifest(testRepo, tag, oci.MediaTypeOCIManifest, []byte(testManifest+tag))
	}
	var rawQuery atomic.Value
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/tags/list") {
			rawQuery.Store(r.URL.RawQuery)
		}
		f.ServeHTTP(w, r)
	})
	c := newTestClient(t, serve(t, upstreamtest.RequireBearer(h)).URL, Registry{})
	tl, err := c.Tags(testCtx(t), testRepo, url.Values{"n": {"2"}, "last": {"a"}, "evil": {"1"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := rawQuery.Load(); got != "last=a&n=2" {
		t.Errorf("upstream query = %q, want only n and last", got)
	}
	if string(tl.Body) != `{"name":"library/app","tags":["b","c"]}` || tl.ContentType != "application/json" {
		t.Errorf("body %s type %q", tl.Body, tl.ContentType)
	}
	if want := `</v2/library/app/tags/list?last=c&n=2>; rel="next"`; tl.Link != want {
		t.Errorf("Link = %q, want %q", tl.Link, want)
	}
}

func TestCustomDialerIsUsed(t *testing.T) {
	t.Parallel()
	f := newFixture()
	srv := serve(t, upstreamtest.RequireBearer(f.reg))
	d := &countingDialer{}
	c := newTestClient(t, srv.URL, Registry{}, WithDialer(d.DialContext))
	if _, err := c.Manifest(testCtx(t), testRepo, "latest", false); err != nil {
		t.Fatal(err)
	}
	if d.n.Load() == 0 {
		t.Fatal("custom dialer never called")
	}
}

func TestInvalidInput(t *testing.T) {
	t.Parallel()
	c := newTestClient(t, "http://127.0.0.1:1", Registry{})
	ctx := testCtx(t)
	for name, call := range map[string]func() error{
		"bad repository": func() error { _, err := c.Manifest(ctx, "Upper/Case", "latest", false); return err },
		"bad tag":        func() error { _, err := c.Manifest(ctx, testRepo, "-bad", false); return err },
		"zero digest":    func() error { _, err := c.Blob(ctx, testRepo, oci.Digest{}); return err },
		"bad tags repo":  func() error { _, err := c.Tags(ctx, "../x", nil); return err },
	} {
		if err := call(); err == nil || IsUnavailable(err) {
			t.Errorf("%s: err = %v, want a validation error", name, err)
		}
	}
}

func TestNewValidatesRegistry(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{"ftp://host", "https://user:pw@host", "https://host/path", "https://", "https://host?x=1"} {
		u, _ := url.Parse(raw)
		if _, err := New(Registry{Prefix: "x", URL: u}); err == nil {
			t.Errorf("New(%q) accepted", raw)
		} else if strings.Contains(err.Error(), "pw") {
			t.Errorf("New(%q) error leaks the password: %v", raw, err)
		}
	}
	if _, err := New(Registry{Prefix: "x"}); err == nil {
		t.Error("New without URL accepted")
	}
}
