package clash

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
)

func TestHTTPSourceFetch(t *testing.T) {
	t.Parallel()
	var ua string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ua = r.UserAgent()
		fmt.Fprint(w, "proxies: []")
	}))
	defer srv.Close()
	src, err := NewHTTPSource(srv.URL + "/sub?token=abc")
	if err != nil {
		t.Fatal(err)
	}
	body, err := src.Fetch(t.Context())
	if err != nil || string(body) != "proxies: []" {
		t.Fatalf("Fetch = %q, %v", body, err)
	}
	if !strings.Contains(ua, "clash") {
		t.Errorf("User-Agent %q does not ask for Clash YAML", ua)
	}
}

// TestHTTPSourceErrorsHideTheURL: every failure names what went wrong and
// never the URL or its token, which Go's url.Error would print.
func TestHTTPSourceErrorsHideTheURL(t *testing.T) {
	t.Parallel()
	const token = "tok-SECRET-9f8e7d"
	big := strings.Repeat("x", 2048)
	slow := make(chan struct{})
	t.Cleanup(func() { close(slow) })
	mux := http.NewServeMux()
	mux.HandleFunc("/missing/", http.NotFound)
	mux.HandleFunc("/big-declared/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(big)))
		fmt.Fprint(w, big)
	})
	mux.HandleFunc("/big-chunked/", func(w http.ResponseWriter, r *http.Request) {
		for range 4 {
			fmt.Fprint(w, big[:512])
			w.(http.Flusher).Flush()
		}
		fmt.Fprint(w, big)
	})
	mux.HandleFunc("/slow/", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-slow:
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/redirect/", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/missing/"+token+"-redirected?token="+token, http.StatusFound)
	})
	mux.HandleFunc("/loop/", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.String(), http.StatusFound)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close) // after the parallel subtests
	closed := fmt.Sprintf("http://127.0.0.1:%d", testkit.FreePort(t))
	tests := []struct {
		name, url, want string
	}{
		{"404", srv.URL + "/missing/" + token + "?token=" + token, "answered 404 Not Found"},
		{"declared too big", srv.URL + "/big-declared/" + token, "more than the 1024 allowed"},
		{"chunked too big", srv.URL + "/big-chunked/" + token, "larger than the 1024 bytes allowed"},
		{"timeout", srv.URL + "/slow/" + token + "?token=" + token, "deadline exceeded"},
		{"refused", closed + "/" + token + "?k=" + token, "connection refused"},
		{"redirect", srv.URL + "/redirect/" + token, "answered 404"},
		{"redirect loop", srv.URL + "/loop/" + token, "more than 5 redirects"},
		{"user info", "http://user:" + token + "@127.0.0.1:1/", "connection refused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src, err := NewHTTPSource(tc.url, WithMaxBytes(1024), WithFetchTimeout(300*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			_, err = src.Fetch(t.Context())
			if !errors.Is(err, ErrSubscription) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrSubscription containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), token) || strings.Contains(err.Error(), "SECRET") {
				t.Fatalf("error leaks the URL: %v", err)
			}
		})
	}
}

func TestNewHTTPSourceRefusesWithoutEcho(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{"ftp://host/sub-SECRET", "not a url SECRET", "https:///path-SECRET", "%zz-SECRET"} {
		_, err := NewHTTPSource(raw)
		if err == nil || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("NewHTTPSource(%q) = %v", raw, err)
		}
	}
}
