package upstreamtest_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream/upstreamtest"
)

func TestRegistryTagsPagination(t *testing.T) {
	t.Parallel()
	reg := upstreamtest.NewRegistry()
	for _, tag := range []string{"c", "a", "b"} {
		reg.PutManifest("r", tag, oci.MediaTypeOCIManifest, []byte(tag))
	}
	tests := []struct {
		query, body, link string
	}{
		{"", `{"name":"r","tags":["a","b","c"]}`, ""},
		{"?n=2", `{"name":"r","tags":["a","b"]}`, `</v2/r/tags/list?last=b&n=2>; rel="next"`},
		{"?n=2&last=b", `{"name":"r","tags":["c"]}`, ""},
		{"?last=c", `{"name":"r","tags":[]}`, ""},
		{"?n=0", `{"name":"r","tags":[]}`, `</v2/r/tags/list?n=0>; rel="next"`},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		reg.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v2/r/tags/list"+tt.query, nil))
		body, _ := io.ReadAll(rec.Body)
		if string(body) != tt.body || rec.Header().Get("Link") != tt.link {
			t.Errorf("%q: %s Link %q; want %s Link %q", tt.query, body, rec.Header().Get("Link"), tt.body, tt.link)
		}
	}
}

func TestRegistryErrors(t *testing.T) {
	t.Parallel()
	reg := upstreamtest.NewRegistry()
	reg.PutManifest("r", "v1", oci.MediaTypeOCIManifest, []byte("{}"))
	tests := []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/v2/", 200},
		{http.MethodHead, "/v2/r/manifests/v1", 200},
		{http.MethodGet, "/v2/r/manifests/v2", 404},
		{http.MethodGet, "/v2/r/blobs/sha256:00", 404},
		{http.MethodGet, "/v2/none/tags/list", 404},
		{http.MethodPut, "/v2/r/manifests/v1", 405},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		reg.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
		if rec.Code != tt.status {
			t.Errorf("%s %s = %d, want %d", tt.method, tt.path, rec.Code, tt.status)
		}
	}
	if reg.Hits(http.MethodHead, "/v2/r/manifests/v1") != 1 {
		t.Error("Hits not counted")
	}
}
