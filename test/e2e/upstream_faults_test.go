package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// settle is how long the tests watch the store after a failed fill: long
// enough for an asynchronous commit to show up if the edge wrongly made one.
const settle = 2 * time.Second

// TestUpstreamFaults checks the pull path's rules (edge/README.md, "How a
// pull goes through the edge"): a short body or a wrong digest from the upstream
// never leaves anything visible in the cache, a later pull succeeds, and
// concurrent cold requests share one upstream fetch.
func TestUpstreamFaults(t *testing.T) {
	t.Parallel()
	for _, store := range stores {
		t.Run(store, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, store, envOptions{})
			for _, tc := range []struct {
				name  string
				fault harness.Fault
			}{
				{"killed mid-blob", harness.FaultCut},
				{"wrong body", harness.FaultCorrupt},
			} {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					im := harness.PushImage(t, e.reg.Addr, "e2e/fault-"+map[harness.Fault]string{harness.FaultCut: "cut", harness.FaultCorrupt: "corrupt"}[tc.fault],
						"v1", "application/vnd.oci.image.manifest.v1+json", 1, 4<<20)
					layer := im.Layers[0]
					e.fault.SetFault(layer, tc.fault)
					r := do(t, http.MethodGet, e.blobURL(im.Repo, layer), nil)
					if r.bodyErr == nil && r.status == http.StatusOK && harness.SHA256(r.body) == layer {
						t.Fatalf("the faulty upstream body reached the client as a good blob")
					}
					if r.bodyErr == nil && r.status == http.StatusOK {
						t.Errorf("the client got a complete 200 with wrong content (%d bytes, digest %s): the transfer must break", len(r.body), harness.SHA256(r.body))
					}
					assertNotStored(t, e, layer)

					e.fault.SetFault(layer, harness.FaultNone)
					r = do(t, http.MethodGet, e.blobURL(im.Repo, layer), nil)
					if r.bodyErr != nil || r.status != http.StatusOK || harness.SHA256(r.body) != layer {
						t.Fatalf("pull after the fault cleared: status %d, err %v", r.status, r.bodyErr)
					}
					// The check above is only meaningful if a good fill does
					// show up where storedBlob looks.
					waitStored(t, e, layer)
				})
			}

			t.Run("100 concurrent cold clients", func(t *testing.T) {
				t.Parallel()
				im := harness.PushImage(t, e.reg.Addr, "e2e/herd", "v1", "application/vnd.oci.image.manifest.v1+json", 1, 16<<20)
				layer := im.Layers[0]
				// ~1 s of transfer, so that most clients join a fill in
				// flight rather than find a finished one.
				e.fault.SetThrottle(layer, 4*time.Millisecond)
				const clients = 100
				start := make(chan struct{})
				errs := make(chan string, clients)
				var wg sync.WaitGroup
				for i := 0; i < clients; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						if msg := fetchDigest(e.blobURL(im.Repo, layer), layer); msg != "" {
							errs <- msg
						}
					}()
				}
				close(start)
				wg.Wait()
				close(errs)
				for msg := range errs {
					t.Error(msg)
				}
				if n := e.fault.Count(http.MethodGet, "blobs", layer); n != 1 {
					t.Errorf("%d concurrent cold GETs caused %d upstream blob GETs, want 1", clients, n)
				}
			})
		})
	}
}

// fetchDigest GETs url and returns a problem, or "" when the body has
// digest want.
func fetchDigest(url, want string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	// Hash while reading: 100 clients holding 16 MiB each would be 1.6 GB.
	h := sha256.New()
	_, err = io.Copy(h, resp.Body)
	got := "sha256:" + hex.EncodeToString(h.Sum(nil))
	switch {
	case err != nil:
		return "read body: " + err.Error()
	case resp.StatusCode != http.StatusOK:
		return "status " + resp.Status
	case got != want:
		return "wrong digest " + got
	}
	return ""
}

// assertNotStored watches the store for settle and fails if the blob ever
// becomes visible.
func assertNotStored(t *testing.T, e *env, digest string) {
	t.Helper()
	deadline := time.Now().Add(settle)
	for {
		if e.storedBlob(t, digest) {
			t.Errorf("blob %s is visible in the %s store after a failed fill", digest, e.store)
			return
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitStored waits for a successful fill to be committed.
func waitStored(t *testing.T, e *env, digest string) {
	t.Helper()
	testkit.WaitFor(t, fmt.Sprintf("blob %s visible in the %s store after a good pull", digest, e.store), 30*time.Second,
		func() bool { return e.storedBlob(t, digest) })
}
