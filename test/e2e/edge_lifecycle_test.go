package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// TestEdgeFailsClosedUntilConfigured: an edge started with --control-plane
// while the control plane is down, on a fresh state directory, serves
// nothing: /readyz, /v2/ and a manifest GET answer 503 UNAVAILABLE and its
// flag upstream sees no request, while /healthz is 200. Once the control
// plane is up the edge becomes ready and pulls need the namespace's pull
// token (and go to the control plane's upstream, with its credentials).
func TestEdgeFailsClosedUntilConfigured(t *testing.T) {
	t.Parallel()
	e := newCPEnv(t)
	var flagUpstream atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		flagUpstream.Add(1)
		w.WriteHeader(http.StatusNotFound)
	}))
	t.Cleanup(up.Close)
	e.cp.Kill()
	edge := e.startEdge(t, "team-a", "team-a", "--upstream", prefix+"="+up.URL)

	if r := edge.Readiness(t); r.Code != http.StatusServiceUnavailable || r.Ready || r.Config != "waiting" || r.ConfigVersion != "" {
		t.Fatalf("/readyz with the control plane down: %+v", r)
	}
	manifest := edge.URL + "/v2/" + prefix + "/" + e.img.Repo + "/manifests/" + e.img.Tag
	accept := map[string]string{"Accept": string(e.img.MediaType)}
	for _, u := range []string{edge.URL + "/v2/", manifest, edge.URL + "/v2/dockerhub/library/busybox/manifests/latest"} {
		r := do(t, http.MethodGet, u, accept)
		if r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), `"UNAVAILABLE"`) {
			t.Errorf("GET %s before any configuration: %d %s", u, r.status, r.body)
		}
	}
	if r := do(t, http.MethodGet, edge.URL+"/healthz", nil); r.status != http.StatusOK {
		t.Errorf("/healthz: %d", r.status)
	}
	if n := flagUpstream.Load(); n != 0 {
		t.Errorf("the flag upstream got %d requests from an unconfigured edge", n)
	}

	e.cp.Start(t)
	e.waitSynced(t, edge, "team-a")
	if r := edge.Readiness(t); r.Code != http.StatusOK || !r.Ready || r.Config != "applied" {
		t.Fatalf("/readyz once configured: %+v", r)
	}
	if r := do(t, http.MethodGet, manifest, accept); r.status != http.StatusUnauthorized {
		t.Errorf("pull without the pull token: %d, want 401", r.status)
	}
	hdr := e.authHeader("team-a")
	hdr["Accept"] = string(e.img.MediaType)
	if r := do(t, http.MethodGet, manifest, hdr); r.status != http.StatusOK || string(r.body) != string(e.img.Manifest) {
		t.Errorf("pull with the pull token: %d %s", r.status, r.body)
	}
	if n := flagUpstream.Load(); n != 0 {
		t.Errorf("the flag upstream got %d requests; the control plane's configuration replaces it", n)
	}
}

// TestEdgeGracefulShutdown: SIGTERM during a slow blob transfer. /readyz
// turns 503 (draining) at once, new requests are still served during
// --shutdown-delay, then new connections are refused while the transfer
// runs on; it completes byte-exact, the edge exits 0, and the blob it
// cached serves from the cache after a restart.
func TestEdgeGracefulShutdown(t *testing.T) {
	t.Parallel()
	const delay = 4 * time.Second
	e := newEnv(t, "fs", envOptions{edgeArgs: []string{"--shutdown-delay", delay.String(), "--shutdown-timeout", "90s"}})
	im := harness.PushImage(t, e.reg.Addr, "e2e/drain", "v1", "application/vnd.oci.image.manifest.v1+json", 1, 16<<20)
	layer := im.Layers[0]
	// 256 chunks of 64 KiB, 25 ms apart: the transfer outlasts the drain
	// delay by seconds.
	e.fault.SetThrottle(layer, 25*time.Millisecond)

	type result struct {
		digest string
		n      int64
		err    error
	}
	started, done := make(chan struct{}), make(chan result, 1)
	go func() {
		resp, err := client.Get(e.blobURL(im.Repo, layer))
		if err != nil {
			close(started)
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		h := sha256.New()
		first := make([]byte, 1)
		n, err := io.ReadFull(resp.Body, first)
		h.Write(first[:n])
		close(started)
		if err != nil {
			done <- result{err: fmt.Errorf("status %d: %w", resp.StatusCode, err)}
			return
		}
		m, err := io.Copy(h, resp.Body)
		done <- result{digest: "sha256:" + hex.EncodeToString(h.Sum(nil)), n: int64(n) + m, err: err}
	}()
	<-started

	e.edge.Terminate(t)
	signalled := time.Now()
	if r := e.edge.WaitReadiness(t, "draining after SIGTERM", delay, func(r harness.EdgeReadiness) bool { return r.Draining }); r.Code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while draining: %+v", r)
	}
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := fresh.Get(e.edge.URL + "/v2/")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("new request during the drain delay: %v %v", resp, err)
	}
	resp.Body.Close()
	if time.Since(signalled) >= delay {
		t.Fatalf("the checks during the drain delay took %v, longer than the delay: the test proves nothing", time.Since(signalled))
	}
	waitFor(t, "new connections refused after the drain delay", func() bool {
		c, err := net.DialTimeout("tcp", e.edge.Addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case r := <-done:
		t.Fatalf("the transfer ended before the listener closed (%+v): the test proves nothing", r)
	default:
	}
	if r := <-done; r.err != nil || r.digest != layer {
		t.Fatalf("in-flight transfer across SIGTERM: %d bytes, digest %s, error %v; want %s", r.n, r.digest, r.err, layer)
	}
	if err := e.edge.WaitExit(t, 90*time.Second); err != nil {
		t.Fatalf("edge exit: %v, want exit code 0", err)
	}
	if n := e.fault.Count(http.MethodGet, "blobs", layer); n != 1 {
		t.Errorf("%d upstream GETs of the layer, want 1", n)
	}

	e.fault.SetThrottle(layer, 0)
	e.edge.Restart(t)
	r := do(t, http.MethodGet, e.blobURL(im.Repo, layer), nil)
	if r.status != http.StatusOK || harness.SHA256(r.body) != layer || r.header.Get("X-Cache") != "HIT" {
		t.Fatalf("blob after restart: %d X-Cache %q", r.status, r.header.Get("X-Cache"))
	}
}
