package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// prefix is the edge path prefix of the test upstream:
// /v2/test/<repository>/... → upstream repository <repository>.
const prefix = "test"

// stores are the two storage back ends every scenario runs against.
var stores = []string{"fs", "s3"}

// env is one complete set-up: edge → token proxy → fault proxy →
// docker-registry, with the edge's cache on a directory or in a bucket.
type env struct {
	store string
	// reg is the real upstream registry; images are pushed to it directly
	// and "pulling the upstream directly" means pulling from it.
	reg *harness.Registry
	// fault sits between the token service and the registry: it counts
	// what the edge fetched and injects faults.
	fault    *harness.FaultProxy
	faultSrv *httptest.Server
	// token is the upstream as the edge sees it (--upstream test=...).
	token *harness.TokenProxy
	edge  *harness.Edge
	// storeDir is the filesystem store; s3/s3Prefix the bucket store.
	storeDir string
	s3       *harness.S3
	s3Prefix string
}

// envOptions tune newEnv.
type envOptions struct {
	// edgeArgs are extra edge flags, e.g. --tag-ttl.
	edgeArgs []string
	// storeDir places the filesystem store (default: in a temp dir).
	storeDir string
}

// newEnv starts a full set-up for store ("fs" or "s3").
func newEnv(t *testing.T, store string, opts envOptions) *env {
	t.Helper()
	e := &env{store: store}
	e.reg = harness.StartDockerRegistry(t)
	fp, err := harness.NewFaultProxy(e.reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	e.fault = fp
	e.faultSrv = httptest.NewServer(fp)
	t.Cleanup(e.faultSrv.Close)
	e.token = harness.StartTokenProxy(t, e.faultSrv.URL)

	args := append([]string{"--upstream", prefix + "=" + e.token.URL, "--log-level", "debug"}, opts.edgeArgs...)
	var edgeEnv []string
	switch store {
	case "fs":
		e.storeDir = opts.storeDir
		if e.storeDir == "" {
			e.storeDir = filepath.Join(t.TempDir(), "store")
		}
		args = append(args, "--storage", e.storeDir)
	case "s3":
		e.s3 = harness.StartS3(t)
		e.s3Prefix = "edge-" + strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
		args = append(args, e.s3.EdgeArgs(e.s3Prefix)...)
		edgeEnv = e.s3.EdgeEnv()
	default:
		t.Fatalf("unknown store %q", store)
	}
	e.edge = harness.StartEdgeWith(t, harness.EdgeOptions{Args: args, Env: edgeEnv})
	return e
}

// stopUpstream takes the whole upstream away: token service, fault proxy
// and registry.
func (e *env) stopUpstream() {
	e.token.Stop()
	e.faultSrv.CloseClientConnections()
	e.faultSrv.Close()
	e.reg.Stop()
}

// edgeRef and directRef are an image's references through the edge and at
// the upstream registry itself.
func (e *env) edgeRef(im harness.Image) string         { return im.Ref(e.edge.Addr, prefix) }
func (e *env) edgeDigestRef(im harness.Image) string   { return im.DigestRef(e.edge.Addr, prefix) }
func (e *env) directRef(im harness.Image) string       { return im.Ref(e.reg.Addr, "") }
func (e *env) directDigestRef(im harness.Image) string { return im.DigestRef(e.reg.Addr, "") }

// blobURL is the edge URL of a blob of repo.
func (e *env) blobURL(repo, digest string) string {
	return e.edge.URL + "/v2/" + prefix + "/" + repo + "/blobs/" + digest
}

// storedBlob reports whether the cache holds a visible blob (or metadata of
// one) for digest: any file or key ending in blobs/<algo>/<hex>. Temporary
// uploads never have that name, so this is what "visible" means.
func (e *env) storedBlob(t *testing.T, digest string) bool {
	t.Helper()
	suffix := "blobs/" + strings.Replace(digest, ":", "/", 1)
	if e.store == "s3" {
		for _, k := range e.s3.Keys(t, e.s3Prefix) {
			if strings.HasSuffix(k, suffix) {
				return true
			}
		}
		return false
	}
	found := false
	err := filepath.WalkDir(e.storeDir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if !d.IsDir() && strings.HasSuffix(filepath.ToSlash(path), suffix) {
			found = true
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk store: %v", err)
	}
	return found
}

// client is for the tests' own HTTP requests: a deadline on everything, so
// that a hanging edge fails a test instead of the whole run.
var client = &http.Client{Timeout: 2 * time.Minute}

// response is a finished HTTP exchange.
type response struct {
	status  int
	header  http.Header
	body    []byte
	bodyErr error // a broken transfer
}

// do sends a request to the edge and reads the whole answer.
func do(t *testing.T, method, url string, hdr map[string]string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, url, nil)
	if err != nil {
		t.Fatalf("request %s %s: %v", method, url, err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return response{bodyErr: fmt.Errorf("%s %s: %w", method, url, err)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b, bodyErr: err}
}
