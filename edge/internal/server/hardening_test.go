package server

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream/upstreamtest"
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
	testkit.WaitFor(t, "blob stored", wait, func() bool {
		resp := head()
		return resp.StatusCode == 200 && resp.Header.Get("X-Cache") == "HIT" && resp.ContentLength == int64(len(body))
	})
	// HEADs before the commit went upstream again; none fetched the blob.
	if reg.Hits("GET", upPath) != 1 {
		t.Fatalf("upstream saw %d GETs", reg.Hits("GET", upPath))
	}
}

// TestInternalRedirectsFlag: an upstream on this machine's non-loopback
// address that redirects blob downloads to 127.0.0.1 is refused (502,
// nothing served), unless its prefix is in InternalRedirects
// (--allow-internal-redirects).
func TestInternalRedirectsFlag(t *testing.T) {
	t.Parallel()
	var hostIP netip.Addr
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && !p.Addr().IsLoopback() {
			hostIP = p.Addr()
			break
		}
	}
	if !hostIP.IsValid() {
		t.Fatalf("set-up: no non-loopback IPv4 address on this machine: %v", addrs)
	}
	body := []byte("redirected layer")
	d := oci.FromBytes(body)
	object := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) }))
	t.Cleanup(object.Close)
	ln, err := net.Listen("tcp", net.JoinHostPort(hostIP.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		http.Redirect(w, r, object.URL+"/object", http.StatusTemporaryRedirect) // object.URL is 127.0.0.1
	}))
	up.Listener = ln
	up.Start()
	t.Cleanup(up.Close)
	for _, tc := range []struct {
		allow []string
		code  int
	}{{nil, 502}, {[]string{"test"}, 200}} {
		addr, stop := startEdge(t, Config{Listen: "127.0.0.1:0", Storage: t.TempDir(), Namespace: "default", TagTTL: time.Minute,
			Upstreams: []string{"test=" + up.URL}, InternalRedirects: tc.allow})
		code, got, _ := get(t, "http://"+addr+"/v2/test/org/app/blobs/"+d.String(), "")
		if code != tc.code || (code == 200 && got != string(body)) {
			t.Errorf("allow %v: %d %q", tc.allow, code, got)
		}
		stop()
	}
}
