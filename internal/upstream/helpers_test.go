package upstream

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream/upstreamtest"
)

const (
	testRepo     = "library/app"
	testManifest = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}`
	testLayer    = "layer bytes, not gzip at all"
)

// fixture is an upstream registry with one image in testRepo:latest.
type fixture struct {
	reg      *upstreamtest.Registry
	manifest oci.Digest
	blob     oci.Digest
}

func newFixture(repos ...string) *fixture {
	if len(repos) == 0 {
		repos = []string{testRepo}
	}
	f := &fixture{reg: upstreamtest.NewRegistry()}
	for _, r := range repos {
		f.manifest = f.reg.PutManifest(r, "latest", oci.MediaTypeOCIManifest, []byte(testManifest))
		f.blob = f.reg.PutBlob(r, []byte(testLayer))
	}
	return f
}

// serve starts an httptest server for h and closes it with the test.
func serve(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// newTestClient returns a Client for srvURL with fast retries and the
// test's log output.
func newTestClient(t *testing.T, srvURL string, reg Registry, opts ...Option) *Client {
	t.Helper()
	u, err := url.Parse(srvURL)
	if err != nil {
		t.Fatal(err)
	}
	reg.URL = u
	if reg.Prefix == "" {
		reg.Prefix = "test"
	}
	base := []Option{
		WithRetry(4, time.Millisecond),
		WithLogger(slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))),
	}
	c, err := New(reg, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// countingDialer counts the connections the client opens.
type countingDialer struct {
	n atomic.Int64
	d net.Dialer
}

func (c *countingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c.n.Add(1)
	return c.d.DialContext(ctx, network, addr)
}

// faults answers the first len(statuses) requests matching path with the
// given statuses (0 = pass through), then passes everything through.
type faults struct {
	next    http.Handler
	path    string
	header  http.Header
	mu      sync.Mutex
	pending []int
	hits    int
}

func (f *faults) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != f.path {
		f.next.ServeHTTP(w, r)
		return
	}
	f.mu.Lock()
	f.hits++
	status := 0
	if len(f.pending) > 0 {
		status, f.pending = f.pending[0], f.pending[1:]
	}
	f.mu.Unlock()
	if status == 0 {
		f.next.ServeHTTP(w, r)
		return
	}
	for k, v := range f.header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(`{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}`))
}

func (f *faults) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits
}

func manifestPath(repo, ref string) string { return "/v2/" + repo + "/manifests/" + ref }
func blobPath(repo string, d oci.Digest) string {
	return "/v2/" + repo + "/blobs/" + d.String()
}
