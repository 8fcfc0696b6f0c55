package server

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/oci"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/upstream/upstreamtest"
)

// TestUpstreamNonManifestRefused: an upstream that answers a manifest
// request with an HTML page or plain JSON gets 502 MANIFEST_INVALID through
// the whole edge, and nothing of it is stored; a manifest served as
// application/json whose body names its type still passes.
func TestUpstreamNonManifestRefused(t *testing.T) {
	t.Parallel()
	reg := upstreamtest.NewRegistry()
	html := []byte("<html><body>Sign in to continue</body></html>")
	plain := []byte(`{"hello":"world"}`)
	reg.PutManifest("org/app", "html", "text/html; charset=utf-8", html)
	reg.PutManifest("org/app", "plain", "application/json", plain)
	good := []byte(`{"schemaVersion":2,"mediaType":"` + oci.MediaTypeOCIManifest + `","layers":[]}`)
	reg.PutManifest("org/app", "good", "application/json", good)
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	storage := t.TempDir()
	addr, _ := startEdge(t, Config{Listen: "127.0.0.1:0", Storage: storage, Namespace: "default", TagTTL: time.Minute,
		Upstreams: []string{"test=" + srv.URL}})
	base := "http://" + addr + "/v2/test/org/app/manifests/"

	for _, tc := range []struct {
		ref  string
		body []byte
	}{{"html", html}, {"plain", plain}, {oci.FromBytes(html).String(), html}} {
		code, body, _ := get(t, base+tc.ref, "")
		if code != 502 || !strings.Contains(body, "MANIFEST_INVALID") {
			t.Errorf("%s: %d %s", tc.ref, code, body)
		}
		hex := oci.FromBytes(tc.body).Hex
		_ = filepath.WalkDir(storage, func(path string, d os.DirEntry, err error) error {
			if err == nil && strings.Contains(path, hex) {
				t.Errorf("%s: stored at %s", tc.ref, path)
			}
			return nil
		})
	}
	code, body, h := get(t, base+"good", "")
	if code != 200 || body != string(good) || h.Get("Content-Type") != oci.MediaTypeOCIManifest {
		t.Errorf("good manifest as application/json: %d %q %q", code, h.Get("Content-Type"), body)
	}
}

// TestHeadUncachedBlob: a HEAD of a blob the edge has not cached is
// answered from an upstream HEAD; the blob is not transferred or stored.
// After a GET cached it, a HEAD is answered from storage.
func TestHeadUncachedBlob(t *testing.T) {
	t.Parallel()
	reg := upstreamtest.NewRegistry()
	body := []byte(strings.Repeat("layer bytes ", 1000))
	d := reg.PutBlob("org/app", body)
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	storage := t.TempDir()
	addr, _ := startEdge(t, Config{Listen: "127.0.0.1:0", Storage: storage, Namespace: "default", TagTTL: time.Minute,
		Upstreams: []string{"test=" + srv.URL}})
	url := "http://" + addr + "/v2/test/org/app/blobs/" + d.String()
	upPath := "/v2/org/app/blobs/" + d.String()
	head := func() *http.Response {
		t.Helper()
		resp, err := http.Head(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := head(); resp.StatusCode != 200 || resp.ContentLength != int64(len(body)) ||
		resp.Header.Get("Docker-Content-Digest") != d.String() || resp.Header.Get("X-Cache") != "MISS" {
		t.Fatalf("HEAD uncached: %d length %d %v", resp.StatusCode, resp.ContentLength, resp.Header)
	}
	if reg.Hits("GET", upPath) != 0 || reg.Hits("HEAD", upPath) != 1 {
		t.Fatalf("upstream saw %d GETs, %d HEADs", reg.Hits("GET", upPath), reg.Hits("HEAD", upPath))
	}
	if code, got, h := get(t, url, ""); code != 200 || got != string(body) || h.Get("X-Cache") != "MISS" {
		t.Fatalf("GET: %d %s", code, h)
	}
	eventually(t, "blob stored", func() bool {
		resp := head()
		return resp.StatusCode == 200 && resp.Header.Get("X-Cache") == "HIT" && resp.ContentLength == int64(len(body))
	})
	// HEADs before the commit went upstream again; none fetched the blob.
	if reg.Hits("GET", upPath) != 1 {
		t.Fatalf("upstream saw %d GETs", reg.Hits("GET", upPath))
	}
}
