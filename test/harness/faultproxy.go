package harness

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Fault is what FaultProxy does to the response for one digest.
type Fault int

// The faults an upstream can show.
const (
	// FaultNone forwards the response untouched.
	FaultNone Fault = iota
	// FaultCut sends the headers (with the full Content-Length) and half
	// of the body, then drops the connection: an upstream killed mid-blob.
	FaultCut
	// FaultCorrupt sends a body of the right length with one byte flipped
	// in the middle: content that does not match its digest.
	FaultCorrupt
)

// FaultProxy is a reverse proxy in front of a registry that counts requests
// by method, kind and reference, and injects faults and slowness per digest.
// It is an http.Handler so that it can sit behind the token-auth wrapper of
// upstreamtest or any other middleware.
type FaultProxy struct {
	target *url.URL
	rp     *httputil.ReverseProxy
	tr     *http.Transport

	mu       sync.Mutex
	faults   map[string]Fault
	throttle map[string]time.Duration
	counts   map[string]int
}

// NewFaultProxy returns a proxy to targetURL (e.g. a Registry's URL).
func NewFaultProxy(targetURL string) (*FaultProxy, error) {
	u, err := url.Parse(targetURL)
	if err != nil {
		return nil, fmt.Errorf("parse proxy target: %w", err)
	}
	// No transparent gzip: the proxy must pass bodies through byte for byte.
	tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = tr
	return &FaultProxy{
		target: u, rp: rp, tr: tr,
		faults:   map[string]Fault{},
		throttle: map[string]time.Duration{},
		counts:   map[string]int{},
	}, nil
}

// SetFault sets the fault for every manifest or blob request whose
// reference is digest (FaultNone clears it).
func (p *FaultProxy) SetFault(digest string, f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults[digest] = f
}

// SetThrottle makes the body for digest arrive in 64 KiB chunks with a
// pause between them, so that a fill stays in flight long enough for
// concurrent clients to join it. Zero clears it.
func (p *FaultProxy) SetThrottle(digest string, perChunk time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.throttle[digest] = perChunk
}

// Count returns how many requests with method for kind ("blobs",
// "manifests", "tags") and reference ref (a digest or tag; "" for tags)
// reached the proxy.
func (p *FaultProxy) Count(method, kind, ref string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[method+" "+kind+" "+ref]
}

// Total returns how many requests of kind ("blobs", "manifests", "tags",
// or "" for all, /v2/ included) reached the proxy.
func (p *FaultProxy) Total(kind string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for k, c := range p.counts {
		if f := strings.Fields(k); kind == "" || (len(f) > 1 && f[1] == kind) {
			n += c
		}
	}
	return n
}

// v2Path splits /v2/<name>/<kind>/<ref>.
var v2Path = regexp.MustCompile(`^/v2/(.+)/(blobs|manifests|tags)/(.*)$`)

func (p *FaultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	kind, ref := "other", r.URL.Path
	if m := v2Path.FindStringSubmatch(r.URL.Path); m != nil {
		kind, ref = m[2], m[3]
		if kind == "tags" {
			ref = ""
		}
	}
	p.mu.Lock()
	p.counts[r.Method+" "+kind+" "+ref]++
	fault, slow := p.faults[ref], p.throttle[ref]
	p.mu.Unlock()
	if fault == FaultNone && slow == 0 {
		p.rp.ServeHTTP(w, r)
		return
	}
	p.serveFaulty(w, r, fault, slow)
}

// serveFaulty fetches the response itself so that it controls every byte
// of the body.
func (p *FaultProxy) serveFaulty(w http.ResponseWriter, r *http.Request, fault Fault, slow time.Duration) {
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = p.target.Scheme, p.target.Host
	out.Host = p.target.Host
	resp, err := p.tr.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		switch http.CanonicalHeaderKey(k) {
		case "Connection", "Keep-Alive", "Transfer-Encoding":
			continue
		}
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	if r.Method == http.MethodHead || resp.StatusCode >= 300 {
		_, _ = io.Copy(w, resp.Body)
		return
	}
	half := resp.ContentLength / 2
	var written int64
	buf := make([]byte, 64<<10)
	flusher, _ := w.(http.Flusher)
	for {
		chunk := buf
		if fault == FaultCut && written+int64(len(chunk)) > half {
			chunk = buf[:half-written]
		}
		n, rerr := resp.Body.Read(chunk)
		if fault == FaultCorrupt && written <= half && half < written+int64(n) {
			chunk[half-written] ^= 0xff
		}
		if n > 0 {
			if _, err := w.Write(chunk[:n]); err != nil {
				return
			}
			written += int64(n)
			if flusher != nil {
				flusher.Flush()
			}
		}
		if fault == FaultCut && written >= half {
			// Abort the response: the server closes the connection
			// without finishing the declared Content-Length.
			panic(http.ErrAbortHandler)
		}
		if rerr != nil {
			return
		}
		if slow > 0 {
			time.Sleep(slow)
		}
	}
}
