package server

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/cache"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

func TestUpstreamLimitsResolve(t *testing.T) {
	t.Parallel()
	flags := UpstreamLimits{RPS: 50, Burst: 100}
	tests := []struct {
		name                string
		flags               UpstreamLimits
		policy              *selfhostv1.NamespacePolicy
		wantRate, wantBurst int
	}{
		{"no policy: the flags", flags, nil, 50, 100},
		{"policy zero: the flags", flags, &selfhostv1.NamespacePolicy{}, 50, 100},
		{"policy wins", flags, &selfhostv1.NamespacePolicy{MaxUpstreamRequestsPerSecond: 5, UpstreamBurst: 7}, 5, 7},
		{"each field on its own", flags, &selfhostv1.NamespacePolicy{UpstreamBurst: 7}, 50, 7},
		{"unlimited flags, policy rate", UpstreamLimits{}, &selfhostv1.NamespacePolicy{MaxUpstreamRequestsPerSecond: 5}, 5, 0},
	}
	for _, tc := range tests {
		rate, burst := tc.flags.resolve(tc.policy)
		if rate != tc.wantRate || burst != tc.wantBurst {
			t.Errorf("%s: rate %d burst %d, want %d %d", tc.name, rate, burst, tc.wantRate, tc.wantBurst)
		}
	}
}

// TestApplySetsUpstreamRate: a control-plane policy's rate reaches the
// cache, and a later policy without one falls back to the flags.
func TestApplySetsUpstreamRate(t *testing.T) {
	t.Parallel()
	p := newParts(t)
	up := newUpstream(t, "tags")
	p.applier.limits = UpstreamLimits{RPS: 1000, Burst: 1000}
	tags := func() error {
		snap := p.set.cur.Load()
		rt, err := snap.table.Parse("/v2/test/org/app/tags/list", nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = p.cache.Tags(context.Background(), snap, rt, url.Values{})
		return err
	}
	if err := p.applier.Apply(snapshot("1", up, &selfhostv1.NamespacePolicy{MaxUpstreamRequestsPerSecond: 1, UpstreamBurst: 2})); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := tags(); err != nil {
			t.Fatalf("request %d within the burst: %v", i, err)
		}
	}
	if err := tags(); !strings.Contains(errString(err), cache.ErrThrottled.Error()) {
		t.Fatalf("request over the policy's burst: %v", err)
	}
	if err := p.applier.Apply(snapshot("2", up, &selfhostv1.NamespacePolicy{})); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := tags(); err != nil {
			t.Fatalf("request %d under the flags' limit: %v", i, err)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestColdBurstGets429 runs the edge with its real handler in front of a
// real docker-registry at 1 upstream request per second, burst 4: a burst
// of cold pulls beyond that gets 429 TOOMANYREQUESTS with Retry-After,
// cached content keeps being served meanwhile, and a refused blob is
// served once the client waited as told.
func TestColdBurstGets429(t *testing.T) {
	t.Parallel()
	reg := harness.StartDockerRegistry(t)
	img := harness.PushImage(t, reg.Addr, "org/app", "v1", types.OCIManifestSchema1, 8, 64<<10)
	addr, _ := startEdge(t, Config{Listen: "127.0.0.1:0", Storage: t.TempDir(), Namespace: "default", TagTTL: time.Hour,
		Upstreams: []string{"test=" + reg.URL}, Limits: UpstreamLimits{RPS: 1, Burst: 4}})
	base := "http://" + addr + "/v2/test/org/app/"

	// Warm: the manifest and the config blob (2 of the 4 tokens).
	if code, body, _ := get(t, base+"manifests/v1", ""); code != 200 || body != string(img.Manifest) {
		t.Fatalf("manifest: %d %s", code, body)
	}
	if code, _, _ := get(t, base+"blobs/"+img.Config, ""); code != 200 {
		t.Fatalf("config blob: %d", code)
	}
	testkit.WaitFor(t, "config blob cached", wait, func() bool {
		_, _, h := head(t, base+"blobs/"+img.Config)
		return h.Get("X-Cache") == "HIT"
	})

	// A burst of 8 cold layers at once: at most the 2 tokens left, plus
	// the one or two the second the burst may take refills, get through.
	type answer struct {
		code       int
		body       string
		retryAfter string
	}
	answers := make([]answer, len(img.Layers))
	var wg sync.WaitGroup
	for i, l := range img.Layers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, body, h := get(t, base+"blobs/"+l, "")
			answers[i] = answer{code, body, h.Get("Retry-After")}
		}()
	}
	wg.Wait()
	var ok, refused []int
	for i, a := range answers {
		switch a.code {
		case http.StatusOK:
			ok = append(ok, i)
		case http.StatusTooManyRequests:
			refused = append(refused, i)
			if ra, err := strconv.Atoi(a.retryAfter); err != nil || ra < 1 || ra > 2 {
				t.Errorf("layer %d: Retry-After %q, want 1 or 2 seconds at 1 request per second", i, a.retryAfter)
			}
			if !strings.Contains(a.body, string(oci.CodeTooManyRequests)) {
				t.Errorf("layer %d: body %s", i, a.body)
			}
		default:
			t.Errorf("layer %d: %d %s", i, a.code, a.body)
		}
	}
	t.Logf("cold burst of %d: %d served, %d refused with 429", len(answers), len(ok), len(refused))
	if len(refused) < 3 {
		t.Fatalf("only %d of %d cold layers refused with a bucket of 2", len(refused), len(answers))
	}

	// Cache hits are never limited: many more than the burst, at once.
	for i := range 20 {
		if code, body, _ := get(t, base+"manifests/v1", ""); code != 200 || body != string(img.Manifest) {
			t.Fatalf("cached manifest, request %d: %d %s", i, code, body)
		}
		if code, _, h := get(t, base+"blobs/"+img.Config, ""); code != 200 || h.Get("X-Cache") != "HIT" {
			t.Fatalf("cached blob, request %d: %d %v", i, code, h)
		}
	}
	code, body, _ := get(t, "http://"+addr+"/metrics", "")
	if code != 200 || !strings.Contains(body, `edge_upstream_throttled_total{reason="rate"}`) {
		t.Errorf("metrics do not count the refusals:\n%s", throttledLines(body))
	}

	// A client that waits Retry-After gets the layer.
	l := img.Layers[refused[0]]
	testkit.WaitFor(t, "a refused layer served after Retry-After", wait, func() bool {
		code, _, h := get(t, base+"blobs/"+l, "")
		if code == http.StatusTooManyRequests {
			ra, _ := strconv.Atoi(h.Get("Retry-After"))
			time.Sleep(time.Duration(ra) * time.Second) // as told
		}
		return code == http.StatusOK
	})
}

func head(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Head(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, "", resp.Header
}

func throttledLines(metrics string) string {
	var out []string
	for _, l := range strings.Split(metrics, "\n") {
		if strings.Contains(l, "throttled") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
