package server

import (
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
