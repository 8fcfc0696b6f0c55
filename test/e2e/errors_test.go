package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// wantError checks an OCI error response: one of the statuses and an
// errors[].code of one of codes.
func wantError(t *testing.T, r response, statuses []int, codes ...string) {
	t.Helper()
	if r.bodyErr != nil {
		t.Errorf("broken response: %v", r.bodyErr)
		return
	}
	if !slices.Contains(statuses, r.status) {
		t.Errorf("status %d, want one of %v (body %q)", r.status, statuses, r.body)
	}
	var body struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil || len(body.Errors) == 0 {
		t.Errorf("body is not OCI error JSON: %q", r.body)
		return
	}
	if !slices.Contains(codes, body.Errors[0].Code) {
		t.Errorf("error code %s, want one of %v", body.Errors[0].Code, codes)
	}
}

// rawGet sends path exactly as given, bypassing Go's URL handling, so that
// dot segments and odd escapes reach the server unchanged.
func rawGet(t *testing.T, addr, path string) response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("dial edge: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Minute))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, addr)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return response{bodyErr: fmt.Errorf("GET %s: %w", path, err)}
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, err = bufio.NewReader(resp.Body).WriteTo(&b)
	return response{status: resp.StatusCode, header: resp.Header, body: []byte(b.String()), bodyErr: err}
}

// TestProtocolErrors checks the edge's answers to bad and unsupported
// requests (edge/README.md, "Registry API and errors").
func TestProtocolErrors(t *testing.T) {
	t.Parallel()
	for _, store := range stores {
		t.Run(store, func(t *testing.T) {
			t.Parallel()
			// The filesystem store is nested deep in a directory the test
			// owns, so that a traversal that escapes the store still lands
			// where the test can see it.
			top := t.TempDir()
			storeDir := filepath.Join(top, "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "store")
			e := newEnv(t, store, envOptions{storeDir: storeDir})
			im := harness.PushImage(t, e.reg.Addr, "e2e/errors", "v1", "application/vnd.oci.image.manifest.v1+json", 1, 64<<10)
			base := e.edge.URL + "/v2/" + prefix + "/" + im.Repo

			t.Run("api version", func(t *testing.T) {
				t.Parallel()
				r := do(t, http.MethodGet, e.edge.URL+"/v2/", nil)
				if r.status != http.StatusOK || r.header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
					t.Errorf("GET /v2/: status %d, API version header %q", r.status, r.header.Get("Docker-Distribution-API-Version"))
				}
			})

			t.Run("path traversal", func(t *testing.T) {
				t.Parallel()
				for _, p := range []string{
					"/v2/test/../../etc/passwd/manifests/x",
					"/v2/test/../../../../../../../../etc/passwd/manifests/latest",
					"/v2/test/%2e%2e/%2e%2e/etc/passwd/manifests/x",
					"/v2/test/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd/manifests/x",
					"/v2/test/..%2f..%2f..%2f..%2fescaped/manifests/x",
					"/v2/test/..%252f..%252fescaped/manifests/x",
					"/v2/test/e2e/errors/manifests/..%2f..%2f..%2f..%2fescaped",
					"/v2/test/a/..%5c..%5cescaped/manifests/x",
					"/v2/test/..;/..;/escaped/manifests/x",
					"/v2/test/e2e%00/errors/manifests/v1",
					"/v2/test/e2e/errors/blobs/sha256:" + strings.Repeat("a", 64) + "/../../../../escaped",
					"/v2/test/../../../../../../../../../../escaped/blobs/sha256:" + strings.Repeat("a", 64),
				} {
					r := rawGet(t, e.edge.Addr, p)
					if r.status == http.StatusOK || r.status == http.StatusPartialContent {
						t.Errorf("GET %s: status %d", p, r.status)
						continue
					}
					wantError(t, r, []int{http.StatusBadRequest, http.StatusNotFound}, "NAME_INVALID", "NAME_UNKNOWN", "MANIFEST_UNKNOWN", "BLOB_UNKNOWN", "DIGEST_INVALID")
				}
				if store == "fs" {
					assertOnlyStore(t, top, storeDir)
				}
			})

			t.Run("malformed digest", func(t *testing.T) {
				t.Parallel()
				for _, d := range []string{
					"sha256:abc",
					"sha256:" + strings.Repeat("A", 64),
					"sha256:" + strings.Repeat("a", 63),
					"sha256:" + strings.Repeat("z", 64),
					"md5:" + strings.Repeat("a", 32),
					"sha512:" + strings.Repeat("a", 64),
				} {
					wantError(t, do(t, http.MethodGet, base+"/blobs/"+d, nil), []int{http.StatusBadRequest}, "DIGEST_INVALID")
				}
				wantError(t, do(t, http.MethodGet, base+"/manifests/sha256:abc", nil), []int{http.StatusBadRequest}, "DIGEST_INVALID")
			})

			t.Run("unknown content", func(t *testing.T) {
				t.Parallel()
				missing := "sha256:" + strings.Repeat("0", 64)
				wantError(t, do(t, http.MethodGet, base+"/manifests/"+missing, nil), []int{http.StatusNotFound}, "MANIFEST_UNKNOWN")
				wantError(t, do(t, http.MethodGet, base+"/manifests/no-such-tag", nil), []int{http.StatusNotFound}, "MANIFEST_UNKNOWN")
				wantError(t, do(t, http.MethodGet, base+"/blobs/"+missing, nil), []int{http.StatusNotFound}, "BLOB_UNKNOWN")
				wantError(t, do(t, http.MethodGet, e.edge.URL+"/v2/"+prefix+"/e2e/no-such-repo/manifests/v1", nil), []int{http.StatusNotFound}, "NAME_UNKNOWN", "MANIFEST_UNKNOWN")
			})

			t.Run("writes", func(t *testing.T) {
				t.Parallel()
				for _, w := range []struct{ method, path string }{
					{http.MethodPost, "/blobs/uploads/"},
					{http.MethodPut, "/manifests/v2"},
					{http.MethodPatch, "/blobs/uploads/0b1c2d3e"},
					{http.MethodPut, "/blobs/uploads/0b1c2d3e?digest=" + im.Layers[0]},
					{http.MethodDelete, "/manifests/" + im.Digest},
					{http.MethodDelete, "/blobs/" + im.Layers[0]},
				} {
					r := do(t, w.method, base+w.path, nil)
					wantError(t, r, []int{http.StatusMethodNotAllowed}, "UNSUPPORTED")
				}
			})

			t.Run("manifest headers and ranges", func(t *testing.T) {
				t.Parallel()
				h := do(t, http.MethodHead, base+"/manifests/"+im.Tag, map[string]string{"Accept": string(im.MediaType)})
				if h.status != http.StatusOK || len(h.body) != 0 {
					t.Fatalf("HEAD manifest: status %d, %d body bytes", h.status, len(h.body))
				}
				for k, want := range map[string]string{
					"Content-Type":          string(im.MediaType),
					"Docker-Content-Digest": im.Digest,
					"Content-Length":        strconv.Itoa(len(im.Manifest)),
				} {
					if got := h.header.Get(k); got != want {
						t.Errorf("HEAD manifest %s: %q, want %q", k, got, want)
					}
				}
				layer := im.Layers[0]
				full := do(t, http.MethodGet, base+"/blobs/"+layer, nil)
				if full.status != http.StatusOK || harness.SHA256(full.body) != layer {
					t.Fatalf("GET blob: status %d, err %v", full.status, full.bodyErr)
				}
				n := len(full.body)
				part := do(t, http.MethodGet, base+"/blobs/"+layer, map[string]string{"Range": "bytes=10-99"})
				if part.status != http.StatusPartialContent || string(part.body) != string(full.body[10:100]) {
					t.Errorf("Range bytes=10-99: status %d, %d bytes", part.status, len(part.body))
				}
				if got, want := part.header.Get("Content-Range"), fmt.Sprintf("bytes 10-99/%d", n); got != want {
					t.Errorf("Content-Range %q, want %q", got, want)
				}
				bad := do(t, http.MethodGet, base+"/blobs/"+layer, map[string]string{"Range": fmt.Sprintf("bytes=%d-", n+100)})
				if bad.status != http.StatusRequestedRangeNotSatisfiable {
					t.Errorf("unsatisfiable Range: status %d, want 416", bad.status)
				}
			})
		})
	}
}

// assertOnlyStore fails when anything exists under top outside store: a
// path traversal that wrote (a tag record, a blob) outside the cache.
func assertOnlyStore(t *testing.T, top, store string) {
	t.Helper()
	err := filepath.WalkDir(top, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == store {
			return filepath.SkipDir
		}
		if !d.IsDir() || !strings.HasPrefix(store, path+string(filepath.Separator)) && path != top {
			t.Errorf("found %s outside the store %s", path, store)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", top, err)
	}
}
