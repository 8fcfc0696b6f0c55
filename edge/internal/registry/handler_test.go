package registry

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/cache"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/metrics"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/route"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/blobtest"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream/upstreamtest"
)

type staticRoutes struct {
	t *route.Table
	f map[string]upstream.Fetcher
	p Policy
}

func (s staticRoutes) Current() Snapshot   { return s }
func (s staticRoutes) Policy() Policy      { return s.p }
func (s staticRoutes) Table() *route.Table { return s.t }
func (s staticRoutes) Fetcher(p string) (upstream.Fetcher, bool) {
	f, ok := s.f[p]
	return f, ok
}

type fixture struct {
	edge     *httptest.Server
	upstream *upstreamtest.Registry
	store    *blobtest.Memory
}

// newFixture runs the handler over a memory store and a real upstream
// client talking to an in-memory registry on a loopback listener.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newPolicyFixture(t, Policy{}, nil)
}

// newPolicyFixture is newFixture with a namespace policy and, when log is
// not nil, a logger.
func newPolicyFixture(t *testing.T, p Policy, log *slog.Logger) *fixture {
	t.Helper()
	reg := upstreamtest.NewRegistry()
	up := httptest.NewServer(reg)
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	table, err := route.NewTable(append(route.Defaults(), route.Upstream{Prefix: "test", URL: u}))
	if err != nil {
		t.Fatal(err)
	}
	client, err := upstream.New(upstream.Registry{Prefix: "test", URL: u}, upstream.WithRetry(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	rs := staticRoutes{t: table, f: map[string]upstream.Fetcher{"test": client}, p: p}
	mem := blobtest.NewMemory()
	m := metrics.New()
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c, err := cache.New(mem, "default", m, cache.WithSpoolDir(t.TempDir()), cache.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	edge := httptest.NewServer(New(rs, c, m, log))
	t.Cleanup(edge.Close)
	return &fixture{edge: edge, upstream: reg, store: mem}
}

func (f *fixture) do(t *testing.T, method, path string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, f.edge.URL+path, nil)
	p, q, _ := strings.Cut(path, "?")
	req.URL.Opaque, req.URL.RawQuery = p, q // keep ".." and encodings exactly as written
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

func errorCode(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Errors []struct{ Code string } `json:"errors"`
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) == 0 {
		t.Fatalf("not OCI error JSON: %q", body)
	}
	return e.Errors[0].Code
}

func TestErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	d := f.upstream.PutBlob("app", []byte("0123456789"))
	missing := oci.FromBytes([]byte("missing"))
	tests := []struct {
		name, method, path string
		hdr                map[string]string
		status             int
		code               string
	}{
		{"traversal", "GET", "/v2/test/../../etc/passwd/manifests/x", nil, 400, "NAME_INVALID"},
		{"encoded traversal", "GET", "/v2/test/%2e%2e/%2e%2e/etc/manifests/x", nil, 400, "NAME_INVALID"},
		{"encoded slash", "GET", "/v2/test/a%2F..%2Fb/manifests/x", nil, 400, "NAME_INVALID"},
		{"upper case name", "GET", "/v2/test/App/manifests/x", nil, 400, "NAME_INVALID"},
		{"unknown prefix", "GET", "/v2/nosuch/a/b/manifests/x", nil, 404, "NAME_UNKNOWN"},
		{"unknown ns host", "GET", "/v2/app/manifests/x?ns=evil.example", nil, 404, "NAME_UNKNOWN"},
		{"malformed digest", "GET", "/v2/test/app/blobs/sha256:abc", nil, 400, "DIGEST_INVALID"},
		{"unsupported algorithm", "GET", "/v2/test/app/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", nil, 400, "DIGEST_INVALID"},
		{"manifest bad digest", "GET", "/v2/test/app/manifests/sha256:zz", nil, 400, "DIGEST_INVALID"},
		{"unknown manifest by digest", "GET", "/v2/test/app/manifests/" + missing.String(), nil, 404, "MANIFEST_UNKNOWN"},
		{"unknown tag", "GET", "/v2/test/app/manifests/nope", nil, 404, "MANIFEST_UNKNOWN"},
		{"unknown blob", "GET", "/v2/test/app/blobs/" + missing.String(), nil, 404, "BLOB_UNKNOWN"},
		{"range past end", "GET", "/v2/test/app/blobs/" + d.String(), map[string]string{"Range": "bytes=100-"}, 416, "RANGE_INVALID"},
		{"range garbage", "GET", "/v2/test/app/blobs/" + d.String(), map[string]string{"Range": "bytes=x-y"}, 416, "RANGE_INVALID"},
		{"multi range", "GET", "/v2/test/app/blobs/" + d.String(), map[string]string{"Range": "bytes=0-1,3-4"}, 416, "RANGE_INVALID"},
		{"push", "POST", "/v2/test/app/blobs/uploads/", nil, 405, "UNSUPPORTED"},
		{"put manifest", "PUT", "/v2/test/app/manifests/v1", nil, 405, "UNSUPPORTED"},
		{"patch", "PATCH", "/v2/test/app/blobs/uploads/x", nil, 405, "UNSUPPORTED"},
		{"delete", "DELETE", "/v2/test/app/manifests/" + missing.String(), nil, 405, "UNSUPPORTED"},
		{"not a registry path", "GET", "/v2/test/app", nil, 404, "NAME_UNKNOWN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp, body := f.do(t, tc.method, tc.path, tc.hdr)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.status, body)
			}
			if got := errorCode(t, body); got != tc.code {
				t.Fatalf("code %s, want %s", got, tc.code)
			}
			if resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("Content-Type %q", resp.Header.Get("Content-Type"))
			}
		})
	}
	for _, k := range f.store.Keys() {
		if !strings.HasPrefix(k, "blobs/") && !strings.HasPrefix(k, "manifests/") && !strings.HasPrefix(k, "tenants/") {
			t.Errorf("unexpected key %q in store", k)
		}
	}
}

func TestManifestByteExact(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	// Odd whitespace and key order: any re-encoding would change the digest.
	body := []byte("{\n   \"schemaVersion\": 2,\"mediaType\":\"" + oci.MediaTypeDockerManifest + "\" ,\"layers\":[] }\n")
	d := f.upstream.PutManifest("library/busybox", "1.36", oci.MediaTypeDockerManifest, body)
	for _, path := range []string{"/v2/test/library/busybox/manifests/1.36", "/v2/test/library/busybox/manifests/" + d.String()} {
		for i := 0; i < 2; i++ { // miss, then hit
			resp, got := f.do(t, "GET", path, nil)
			if resp.StatusCode != 200 || string(got) != string(body) {
				t.Fatalf("%s: status %d body %q", path, resp.StatusCode, got)
			}
			h := resp.Header
			if h.Get("Content-Type") != oci.MediaTypeDockerManifest || h.Get("Docker-Content-Digest") != d.String() ||
				h.Get("ETag") != `"`+d.String()+`"` || h.Get("Docker-Distribution-API-Version") != "registry/2.0" {
				t.Fatalf("%s: headers %v", path, h)
			}
		}
	}
	resp, got := f.do(t, "HEAD", "/v2/test/library/busybox/manifests/1.36", nil)
	if resp.StatusCode != 200 || len(got) != 0 || resp.ContentLength != int64(len(body)) {
		t.Fatalf("HEAD: %d len %d body %q", resp.StatusCode, resp.ContentLength, got)
	}
}

func TestBlobRanges(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	content := []byte("0123456789abcdef")
	d := f.upstream.PutBlob("app", content)
	path := "/v2/test/app/blobs/" + d.String()
	tests := []struct {
		name, rng, want, contentRange string
		status                        int
	}{
		{"cold full", "", string(content), "", 200},
		{"first bytes", "bytes=0-3", "0123", "bytes 0-3/16", 206},
		{"open end", "bytes=10-", "abcdef", "bytes 10-15/16", 206},
		{"suffix", "bytes=-2", "ef", "bytes 14-15/16", 206},
		{"end clamped", "bytes=12-99", "cdef", "bytes 12-15/16", 206},
	}
	for _, tc := range tests { // sequential: the first is the cold fill
		resp, got := f.do(t, "GET", path, map[string]string{"Range": tc.rng})
		if resp.StatusCode != tc.status || string(got) != tc.want || resp.Header.Get("Content-Range") != tc.contentRange {
			t.Fatalf("%s: %d %q %q", tc.name, resp.StatusCode, got, resp.Header.Get("Content-Range"))
		}
		if resp.Header.Get("Accept-Ranges") != "bytes" || resp.Header.Get("Docker-Content-Digest") != d.String() {
			t.Fatalf("%s: headers %v", tc.name, resp.Header)
		}
	}
	if n := f.upstream.Hits("GET", "/v2/app/blobs/"+d.String()); n != 1 {
		t.Fatalf("upstream blob GETs = %d, want 1", n)
	}
}

func TestTagsListLinkRewritten(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, tag := range []string{"a", "b", "c"} {
		f.upstream.PutManifest("library/app", tag, oci.MediaTypeOCIManifest, []byte(`{"schemaVersion":2,"t":"`+tag+`"}`))
	}
	resp, body := f.do(t, "GET", "/v2/test/library/app/tags/list?n=2", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"a","b"`) {
		t.Fatalf("tags: %d %s", resp.StatusCode, body)
	}
	if link := resp.Header.Get("Link"); !strings.HasPrefix(link, "</v2/test/library/app/tags/list?") || !strings.Contains(link, "last=b") {
		t.Fatalf("Link = %q", link)
	}
}

func TestBase(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	resp, body := f.do(t, "GET", "/v2/", nil)
	if resp.StatusCode != 200 || string(body) != "{}" || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
		t.Fatalf("/v2/: %d %q", resp.StatusCode, body)
	}
}

// noRoutes has no snapshot: a wiring bug the handler must not paper over.
type noRoutes struct{}

func (noRoutes) Current() Snapshot { return nil }

// TestNoSnapshotIsUnavailable: a request with no configuration snapshot
// gets 503 UNAVAILABLE and a log line, and reaches no upstream — never a
// fallback to another configuration.
func TestNoSnapshotIsUnavailable(t *testing.T) {
	t.Parallel()
	logs := &syncWriter{w: &bytes.Buffer{}}
	log := slog.New(slog.NewTextHandler(logs, nil))
	m := metrics.New()
	c, err := cache.New(blobtest.NewMemory(), "default", m, cache.WithSpoolDir(t.TempDir()), cache.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	edge := httptest.NewServer(New(noRoutes{}, c, m, log))
	t.Cleanup(edge.Close)
	f := &fixture{edge: edge}
	for _, path := range []string{"/v2/", "/v2/test/app/manifests/v1", "/v2/test/app/blobs/" + oci.FromBytes([]byte("x")).String()} {
		resp, body := f.do(t, "GET", path, nil)
		if resp.StatusCode != http.StatusServiceUnavailable || errorCode(t, body) != string(oci.CodeUnavailable) {
			t.Errorf("%s: %d %s, want 503 UNAVAILABLE", path, resp.StatusCode, body)
		}
	}
	if !strings.Contains(logs.String(), "no configuration snapshot") {
		t.Fatalf("no log line:\n%s", logs.String())
	}
}
