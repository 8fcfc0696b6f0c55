package registry

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/cache"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/metrics"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/route"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/blobtest"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream/upstreamtest"
)

func TestRetryAfterSeconds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		d    time.Duration
		want int
	}{{0, 1}, {time.Millisecond, 1}, {time.Second, 1}, {time.Second + time.Millisecond, 2}, {10 * time.Second, 10}} {
		if got := retryAfterSeconds(tc.d); got != tc.want {
			t.Errorf("retryAfterSeconds(%s) = %d, want %d", tc.d, got, tc.want)
		}
	}
}

// TestThrottledAnswers429: once the namespace's upstream bucket (one
// request a second, burst 1, on a frozen clock) is used up, requests that
// need the upstream get 429 TOOMANYREQUESTS with Retry-After, and what is
// cached is served.
func TestThrottledAnswers429(t *testing.T) {
	t.Parallel()
	reg := upstreamtest.NewRegistry()
	cached := reg.PutBlob("org/app", []byte("cached layer"))
	cold := reg.PutBlob("org/app", []byte("cold layer"))
	up := httptest.NewServer(reg)
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	table, err := route.NewTable([]route.Upstream{{Prefix: "test", URL: u}})
	if err != nil {
		t.Fatal(err)
	}
	client, err := upstream.New(upstream.Registry{Prefix: "test", URL: u}, upstream.WithRetry(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	rs := staticRoutes{t: table, f: map[string]upstream.Fetcher{"test": client}}
	m := metrics.New()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	frozen := time.Unix(1_700_000_000, 0)
	c, err := cache.New(blobtest.NewMemory(), "default", m, cache.WithSpoolDir(t.TempDir()), cache.WithLogger(log),
		cache.WithClock(func() time.Time { return frozen }))
	if err != nil {
		t.Fatal(err)
	}
	c.SetUpstreamRate(1, 1)
	edge := httptest.NewServer(New(rs, c, m, log))
	t.Cleanup(edge.Close)
	f := &fixture{edge: edge}

	// The one token caches a blob; the fill commits before the next step.
	if resp, _ := f.do(t, "GET", "/v2/test/org/app/blobs/"+cached.String(), nil); resp.StatusCode != 200 {
		t.Fatalf("first blob: %d", resp.StatusCode)
	}
	testkit.WaitFor(t, "the blob committed", 30*time.Second, func() error {
		resp, _ := f.do(t, "HEAD", "/v2/test/org/app/blobs/"+cached.String(), nil)
		if x := resp.Header.Get("X-Cache"); x != "HIT" {
			return fmt.Errorf("X-Cache %q", x)
		}
		return nil
	})

	tests := []struct {
		name, method, path string
		status             int
	}{
		{"cold blob", "GET", "/v2/test/org/app/blobs/" + cold.String(), http.StatusTooManyRequests},
		{"cold blob HEAD", "HEAD", "/v2/test/org/app/blobs/" + cold.String(), http.StatusTooManyRequests},
		{"cold manifest", "GET", "/v2/test/org/app/manifests/v1", http.StatusTooManyRequests},
		{"tag list", "GET", "/v2/test/org/app/tags/list", http.StatusTooManyRequests},
		{"cached blob", "GET", "/v2/test/org/app/blobs/" + cached.String(), http.StatusOK},
		{"cached blob again", "GET", "/v2/test/org/app/blobs/" + cached.String(), http.StatusOK},
		{"base", "GET", "/v2/", http.StatusOK},
	}
	for _, tc := range tests {
		resp, body := f.do(t, tc.method, tc.path, nil)
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.name, resp.StatusCode, body, tc.status)
			continue
		}
		if tc.status != http.StatusTooManyRequests {
			continue
		}
		if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra != 1 {
			t.Errorf("%s: Retry-After %q, want 1", tc.name, resp.Header.Get("Retry-After"))
		}
		if tc.method == "GET" {
			if code := errorCode(t, body); code != string(oci.CodeTooManyRequests) {
				t.Errorf("%s: code %s", tc.name, code)
			}
		}
	}
}
