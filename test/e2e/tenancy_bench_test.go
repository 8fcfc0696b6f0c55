//go:build bench

package e2e

// The tenancy benchmark (test/bench-tenancy.sh): what the storage broker
// costs, on real processes (control plane, edges, versitygw,
// docker-registry behind the token proxy):
//
//  1. warm blob throughput through an edge on brokered storage (presigned
//     GET issued by the control plane) vs an edge holding the S3 keys
//     itself (the previous design), interleaved;
//  2. warm pull (manifest by digest + config + layers) by a namespace whose
//     proof and grants are held vs the same pull right after they expired
//     (the control plane asks the upstream again: one HEAD), interleaved,
//     with the upstream HEADs counted.
//
// It is a report: nothing fails on time.

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

func TestTenancyBenchTable(t *testing.T) {
	const reps = 11
	e := newTenancyEnv(t, "--storage-grant-ttl", "1s")
	big := harness.PushImage(t, e.reg.Addr, "pub/big", "v1", types.OCIManifestSchema1, 1, 128<<20)
	direct := harness.StartEdgeWith(t, harness.EdgeOptions{
		Args: append(e.s3.EdgeArgs("direct"), "--namespace", "direct", "--upstream", "pub="+e.pub.URL),
		Env:  e.s3.EdgeEnv(),
	})
	layer := big.Layers[0]
	brokered := func() (time.Duration, error) {
		return timedGET(e.edges["team-b"].Addr, "/v2/pub/pub/big/blobs/"+layer, e.pullTokens["team-b"])
	}
	keys := func() (time.Duration, error) { return timedGET(direct.Addr, "/v2/pub/pub/big/blobs/"+layer, "") }
	// Prime: team-a fills the shared copy; team-b proves the manifest; the
	// direct edge fills its own prefix.
	if _, err := timedGET(e.edges["team-a"].Addr, "/v2/pub/pub/big/manifests/v1", e.pullTokens["team-a"]); err != nil {
		t.Fatal(err)
	}
	if _, err := timedGET(e.edges["team-a"].Addr, "/v2/pub/pub/big/blobs/"+layer, e.pullTokens["team-a"]); err != nil {
		t.Fatal(err)
	}
	if _, err := timedGET(e.edges["team-b"].Addr, "/v2/pub/pub/big/manifests/"+big.Digest, e.pullTokens["team-b"]); err != nil {
		t.Fatal(err)
	}
	for _, f := range []func() (time.Duration, error){brokered, keys} {
		if _, err := f(); err != nil {
			t.Fatal(err)
		}
	}
	var bro, key []time.Duration
	for range reps {
		for _, arm := range []struct {
			f   func() (time.Duration, error)
			out *[]time.Duration
		}{{brokered, &bro}, {keys, &key}} {
			d, err := arm.f()
			if err != nil {
				t.Fatal(err)
			}
			*arm.out = append(*arm.out, d)
		}
	}
	size := float64(128 << 20)
	mbps := func(d time.Duration) float64 { return size / d.Seconds() / (1 << 20) }
	var b strings.Builder
	fmt.Fprintf(&b, "| # | measurement | edge | baseline | ratio | target |\n|---|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| 1 | warm 128 MiB blob, %d interleaved reps | brokered (presigned GET): %.0f MiB/s (%s) | edge with S3 keys: %.0f MiB/s (%s) | %.2f× | ≥ 0.97× |\n",
		reps, mbps(median(bro)), spread(bro), mbps(median(key)), spread(key), ratio(median(key), median(bro)))

	// Row 2: proof held vs expired, on team-b's public pull of app.
	pull := func() (time.Duration, error) {
		start := time.Now()
		if _, err := timedGET(e.edges["team-b"].Addr, "/v2/pub/pub/app/manifests/"+e.app.Digest, e.pullTokens["team-b"]); err != nil {
			return 0, err
		}
		for _, d := range e.app.Blobs() {
			if _, err := timedGET(e.edges["team-b"].Addr, "/v2/pub/pub/app/blobs/"+d, e.pullTokens["team-b"]); err != nil {
				return 0, err
			}
		}
		return time.Since(start), nil
	}
	if _, err := timedGET(e.edges["team-a"].Addr, "/v2/pub/pub/app/manifests/v1", e.pullTokens["team-a"]); err != nil {
		t.Fatal(err)
	}
	for _, d := range e.app.Blobs() {
		if _, err := timedGET(e.edges["team-a"].Addr, "/v2/pub/pub/app/blobs/"+d, e.pullTokens["team-a"]); err != nil {
			t.Fatal(err)
		}
	}
	var held, first []time.Duration
	heldHEADs, firstHEADs := 0, 0
	for range reps {
		// Past the proof TTL (3 s) and the edge's grant TTL (1 s).
		time.Sleep(3200 * time.Millisecond)
		h0 := e.manifestHEADs(t, "pub/app")
		d, err := pull()
		if err != nil {
			t.Fatal(err)
		}
		first = append(first, d)
		h1 := e.manifestHEADs(t, "pub/app")
		firstHEADs += h1 - h0
		// Immediately again: the proof is held (no upstream HEAD).
		d, err = pull()
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, d)
		heldHEADs += e.manifestHEADs(t, "pub/app") - h1
	}
	fmt.Fprintf(&b, "| 2 | warm pull of pub/app (manifest + %d blobs), %d interleaved reps | needs its proof again: %s (%s), %d upstream HEADs | proof held: %s (%s), %d upstream HEADs | +%s per proof | informational |\n",
		len(e.app.Blobs()), reps, median(first), spread(first), firstHEADs, median(held), spread(held), heldHEADs, median(first)-median(held))
	table := b.String()
	t.Log("\n" + table)
	if out := os.Getenv("BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(table), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// manifestHEADs counts the upstream registry's manifest HEADs for repo.
func (e *tenancyEnv) manifestHEADs(t *testing.T, repo string) int {
	return harness.RegistryRequests(t, e.reg.Proc, "HEAD", "/v2/"+repo+"/manifests/")
}

// timedGET reads path from an edge to the end and returns how long it took.
func timedGET(addr, path, pullToken string) (time.Duration, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, err
	}
	if pullToken != "" {
		req.SetBasicAuth("puller", pullToken)
	}
	req.Header.Set("Accept", string(types.OCIManifestSchema1)+","+string(types.OCIImageIndex)+","+string(types.DockerManifestSchema2))
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %d", path, resp.StatusCode)
	}
	return time.Since(start), nil
}
