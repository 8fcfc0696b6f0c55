package upstream

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
)

// TestBlobBodyIdleTimeout: a blob body that stops delivering bytes ends
// with ErrUnavailable exactly the idle timeout after its last bytes; a
// slow one whose chunks come a nanosecond within the timeout, and a
// caller that pauses between reads, are not cut off. Client and registry
// run in a synctest bubble over an in-memory network, so the timing is
// the fake clock's, exact and free of machine load.
func TestBlobBodyIdleTimeout(t *testing.T) {
	t.Parallel()
	synctest.Test(t, testBlobBodyIdleTimeout)
}

func testBlobBodyIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	body := strings.Repeat("x", 3000)
	d := oci.FromBytes([]byte(body))
	stalled := make(chan struct{})
	t.Cleanup(func() { close(stalled) })
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			w.WriteHeader(http.StatusOK)
			return
		}
		repo := strings.Split(strings.TrimPrefix(r.URL.Path, "/v2/"), "/blobs/")[0]
		w.Header().Set("Content-Length", "3000")
		w.WriteHeader(http.StatusOK)
		for i := range 3 {
			_, _ = io.WriteString(w, body[i*1000:(i+1)*1000])
			w.(http.Flusher).Flush()
			switch repo {
			case "org/stalls":
				if i == 0 {
					select { // sends the first third, then nothing
					case <-stalled:
					case <-r.Context().Done():
					}
					return
				}
			case "org/slow":
				time.Sleep(idle - time.Nanosecond) // every chunk just within the idle timeout
			}
		}
	})
	c := newTestClient(t, "http://registry.test", Registry{}, WithBodyIdleTimeout(idle), WithDialer(testkit.ServePipe(t, h)))
	ctx := t.Context()
	read := func(repo string, pause time.Duration) (string, error) {
		b, err := c.Blob(ctx, repo, d)
		if err != nil {
			return "", err
		}
		defer b.Body.Close()
		first := make([]byte, 1)
		if _, err := io.ReadFull(b.Body, first); err != nil {
			return "", err
		}
		time.Sleep(pause) // the caller's own time between reads
		rest, err := io.ReadAll(b.Body)
		return string(first) + string(rest), err
	}

	start := time.Now()
	_, err := read("org/stalls", 0)
	if !IsUnavailable(err) || !strings.Contains(err.Error(), "no data for") {
		t.Fatalf("stalled body: %v", err)
	}
	if el := time.Since(start); el != idle {
		t.Errorf("stalled body ended after %v, want the idle timeout %v", el, idle)
	}
	for _, tc := range []struct {
		repo  string
		pause time.Duration
	}{{"org/slow", 0}, {"org/fast", 2 * idle}} {
		if got, err := read(tc.repo, tc.pause); err != nil || got != body {
			t.Errorf("%s: %d bytes, %v", tc.repo, len(got), err)
		}
	}
}
