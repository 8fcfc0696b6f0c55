//go:build bench

package edge

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// prefix is the edge's path prefix of the benchmark upstream.
const prefix = "test"

// config holds the sizes and durations; BENCH_QUICK=1 shrinks them for a
// smoke run of the benchmark code itself (its numbers mean little).
// BENCH_ONLY=warm,cold,manifest,herd,rss runs only the named groups of rows.
type config struct {
	bigSize, herdSize, rssSize int64
	rssS3Size                  int64
	warmReps, coldReps         int
	herdClients, rssClients    int
	rate, lowRate              int
	rateFor, grace, wrkFor     time.Duration
}

func loadConfig() config {
	c := config{
		bigSize: 512 << 20, herdSize: 256 << 20, rssSize: 1 << 30, rssS3Size: 256 << 20,
		warmReps: 5, coldReps: 3, herdClients: 100, rssClients: 16,
		rate: 2000, lowRate: 200, rateFor: 10 * time.Second, grace: 10 * time.Second, wrkFor: 10 * time.Second,
	}
	if os.Getenv("BENCH_QUICK") == "1" {
		c.bigSize, c.herdSize, c.rssSize, c.rssS3Size = 64<<20, 32<<20, 64<<20, 64<<20
		c.warmReps, c.coldReps = 3, 2
		c.rateFor, c.grace, c.wrkFor = 2*time.Second, 2*time.Second, 2*time.Second
	}
	return c
}

// env is the long-lived set-up shared by the rows: one upstream, the edge
// on each store, docker-registry in proxy mode on each store.
type env struct {
	t      *testing.T
	cfg    config
	tb     *table
	client *http.Client

	up    *harness.Registry // the upstream every contender pulls from
	big   layoutBlob        // the 512 MiB blob of the throughput rows
	small harness.Image     // the image of the manifest rows

	s3       *harness.S3
	edgeFS   *harness.Edge
	edgeS3   *harness.Edge
	regFS    *harness.Registry
	regS3    *harness.Registry // nil when regS3Err says why
	regS3Err error
}

// Where the long-lived contenders keep the S3 copies.
const (
	edgeS3Prefix = "edge-warm"
	regS3Bucket  = "regproxy"
	regS3Root    = "/warm"
)

// TestBenchmarkTable runs every measurement and prints the table. It fails
// only when a measurement could not be made, never on a missed target.
func TestBenchmarkTable(t *testing.T) {
	e := &env{t: t, cfg: loadConfig(), tb: &table{header: machineHeader()}, client: newClient()}
	// Registered first, so it runs last: after every server has stopped,
	// with whatever rows were measured even when a later one broke.
	t.Cleanup(e.print)
	began := time.Now()
	e.setUp()
	t.Logf("set-up done in %v", time.Since(began).Round(time.Second))
	only := map[string]bool{}
	for _, s := range strings.Split(os.Getenv("BENCH_ONLY"), ",") {
		if s = strings.TrimSpace(s); s != "" {
			only[s] = true
		}
	}
	for _, step := range []struct {
		name string
		fn   func()
	}{
		{"warm", e.warmRows},
		{"cold", e.coldRows},
		{"manifest", e.manifestRows},
		{"herd", e.herdRow},
		{"rss", e.rssRow},
	} {
		if len(only) > 0 && !only[step.name] {
			continue
		}
		t0 := time.Now()
		step.fn()
		t.Logf("%s: %v", step.name, time.Since(t0).Round(time.Second))
	}
	e.tb.header = append(e.tb.header, fmt.Sprintf("total benchmark time: %v; %d of %d measurements started on a machine that other processes kept busy for 30 s (their numbers are noisier)",
		time.Since(began).Round(time.Second), quiesced.busy, quiesced.total))
}

// print writes the table to stdout and, when BENCH_OUT names a file, there
// too (test/bench.sh prints it after go test's own output).
func (e *env) print() {
	md := e.tb.markdown()
	fmt.Printf("\n%s\n", md)
	if out := os.Getenv("BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(md), 0o644); err != nil {
			e.t.Errorf("write %s: %v", out, err)
		}
	}
}

// broken records a row whose measurement failed and fails the test.
func (e *env) broken(id, what string, err error) {
	e.t.Helper()
	e.t.Errorf("%s %s: %v", id, what, err)
	e.tb.add(row{ID: id, What: what, Edge: "measurement failed: " + firstLine(err.Error())})
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	if len(line) > 160 {
		line = line[:160] + "…"
	}
	return line
}

func (e *env) setUp() {
	t := e.t
	t.Helper()
	e.up = harness.StartDockerRegistry(t)
	var err error
	if e.big, err = writeRandomBlob(e.up.Root, "bench/big", e.cfg.bigSize); err != nil {
		t.Fatalf("upstream blob: %v", err)
	}
	if err := e.checkUpstream(e.big); err != nil {
		t.Fatal(err)
	}
	e.small = harness.PushImage(t, e.up.Addr, "bench/small", "v1", "application/vnd.oci.image.manifest.v1+json", 1, 4<<10)

	e.s3 = harness.StartS3(t)
	up := []string{"--upstream", prefix + "=" + e.up.URL}
	e.edgeFS = harness.StartEdge(t, up...)
	e.edgeS3 = harness.StartEdgeWith(t, harness.EdgeOptions{Args: append(up, e.s3.EdgeArgs(edgeS3Prefix)...), Env: e.s3.EdgeEnv()})
	e.regFS = harness.StartDockerRegistryProxy(t, e.up.URL)
	e.regS3, e.regS3Err = harness.StartDockerRegistryS3Proxy(t, e.up.URL, e.s3, regS3Bucket, regS3Root)
	if e.regS3Err != nil {
		t.Logf("docker-registry with S3 storage is not available; its rows say so: %v", e.regS3Err)
	}
}

// checkUpstream proves docker-registry serves a blob written into its
// layout, so a failure later is never a set-up problem in disguise.
func (e *env) checkUpstream(b layoutBlob) error {
	req, err := http.NewRequest(http.MethodHead, e.up.URL+"/v2/"+b.Repo+"/blobs/"+b.Digest, nil)
	if err != nil {
		return err
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return fmt.Errorf("HEAD upstream blob: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != b.Size {
		return fmt.Errorf("upstream does not serve the blob written into its layout: HEAD %s/%s: status %d, length %d, want 200 and %d",
			b.Repo, b.Digest, resp.StatusCode, resp.ContentLength, b.Size)
	}
	return nil
}

// URLs of a blob at each kind of contender.
func edgeBlobURL(ed *harness.Edge, b layoutBlob) string {
	return ed.URL + "/v2/" + prefix + "/" + b.Repo + "/blobs/" + b.Digest
}
func regBlobURL(r *harness.Registry, b layoutBlob) string {
	return r.URL + "/v2/" + b.Repo + "/blobs/" + b.Digest
}

// Where each store keeps a blob: the edge's layout (edge/README.md, "Storage") and
// docker-registry's.
func hexOf(digest string) string { return strings.TrimPrefix(digest, "sha256:") }
func edgeFSPath(ed *harness.Edge, b layoutBlob) string {
	return filepath.Join(ed.Storage, "blobs", "sha256", hexOf(b.Digest))
}
func edgeS3Key(storePrefix string, b layoutBlob) string {
	return storePrefix + "/blobs/sha256/" + hexOf(b.Digest)
}
func regDataPath(b layoutBlob) string {
	h := hexOf(b.Digest)
	return "docker/registry/v2/blobs/sha256/" + h[:2] + "/" + h + "/data"
}

// waitFor polls cond until it holds or the deadline passes: fills and the
// registry's proxy writes commit after the client got its bytes.
func waitFor(what string, timeout time.Duration, cond func() bool) error {
	if err := testkit.Poll(context.Background(), timeout, cond); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

func fileHasSize(path string, size int64) bool {
	st, err := os.Stat(path)
	return err == nil && st.Size() == size
}

// measureCtx bounds every single measurement, so a hung server fails the row
// instead of the whole run.
func measureCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Minute)
}
