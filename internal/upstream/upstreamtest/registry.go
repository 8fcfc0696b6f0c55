package upstreamtest

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
)

// Registry is a small in-memory, pull-only registry: manifests by tag and
// digest, blobs, paginated tag lists, and a count of the requests per path.
// It answers the way the spec says (404 with MANIFEST_UNKNOWN and friends),
// which makes it a clean baseline for tests that add faults around it.
type Registry struct {
	mu        sync.Mutex
	manifests map[string]manifest // "<repo>@<digest>"
	tags      map[string]map[string]oci.Digest
	blobs     map[string][]byte // "<repo>@<digest>"
	hits      map[string]int    // "<METHOD> <path>"
}

type manifest struct {
	mediaType string
	body      []byte
}

// NewRegistry returns an empty Registry.
func NewRegistry() *Registry {
	return &Registry{
		manifests: map[string]manifest{},
		tags:      map[string]map[string]oci.Digest{},
		blobs:     map[string][]byte{},
		hits:      map[string]int{},
	}
}

// PutManifest stores body under its digest and, if tag is not empty, under
// tag. It returns the digest.
func (g *Registry) PutManifest(repo, tag, mediaType string, body []byte) oci.Digest {
	d := oci.FromBytes(body)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.manifests[repo+"@"+d.String()] = manifest{mediaType: mediaType, body: slices.Clone(body)}
	if tag != "" {
		if g.tags[repo] == nil {
			g.tags[repo] = map[string]oci.Digest{}
		}
		g.tags[repo][tag] = d
	}
	return d
}

// PutBlob stores body and returns its digest.
func (g *Registry) PutBlob(repo string, body []byte) oci.Digest {
	d := oci.FromBytes(body)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.blobs[repo+"@"+d.String()] = slices.Clone(body)
	return d
}

// Hits returns how many requests were served for method and path
// (e.g. "GET", "/v2/library/nginx/manifests/latest").
func (g *Registry) Hits(method, path string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.hits[method+" "+path]
}

// ServeHTTP implements http.Handler.
func (g *Registry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	g.hits[r.Method+" "+r.URL.Path]++
	g.mu.Unlock()
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeError(w, r, http.StatusMethodNotAllowed, "UNSUPPORTED", "pull-only registry")
		return
	}
	p := r.URL.Path
	switch {
	case p == "/v2/" || p == "/v2":
		w.WriteHeader(http.StatusOK)
	case strings.HasSuffix(p, "/tags/list"):
		g.serveTags(w, r, strings.TrimSuffix(strings.TrimPrefix(p, "/v2/"), "/tags/list"))
	case strings.Contains(p, "/manifests/"):
		i := strings.LastIndex(p, "/manifests/")
		g.serveManifest(w, r, strings.TrimPrefix(p[:i], "/v2/"), p[i+len("/manifests/"):])
	case strings.Contains(p, "/blobs/"):
		i := strings.LastIndex(p, "/blobs/")
		g.serveBlob(w, r, strings.TrimPrefix(p[:i], "/v2/"), p[i+len("/blobs/"):])
	default:
		writeError(w, r, http.StatusNotFound, "NAME_UNKNOWN", "unknown path")
	}
}

func (g *Registry) serveManifest(w http.ResponseWriter, r *http.Request, repo, ref string) {
	g.mu.Lock()
	key := repo + "@" + ref
	if d, ok := g.tags[repo][ref]; ok {
		key = repo + "@" + d.String()
	}
	m, ok := g.manifests[key]
	g.mu.Unlock()
	if !ok {
		writeError(w, r, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown")
		return
	}
	h := w.Header()
	h.Set("Content-Type", m.mediaType)
	h.Set("Docker-Content-Digest", oci.FromBytes(m.body).String())
	h.Set("Content-Length", strconv.Itoa(len(m.body)))
	if r.Method != http.MethodHead {
		_, _ = w.Write(m.body)
	}
}

func (g *Registry) serveBlob(w http.ResponseWriter, r *http.Request, repo, digest string) {
	g.mu.Lock()
	b, ok := g.blobs[repo+"@"+digest]
	g.mu.Unlock()
	if !ok {
		writeError(w, r, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Docker-Content-Digest", digest)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	if r.Method != http.MethodHead {
		_, _ = w.Write(b)
	}
}

// serveTags pages the lexically sorted tags with n and last, and sets a
// Link header when more remain, as the spec describes.
func (g *Registry) serveTags(w http.ResponseWriter, r *http.Request, repo string) {
	g.mu.Lock()
	tm, ok := g.tags[repo]
	var tags []string
	for t := range tm {
		tags = append(tags, t)
	}
	g.mu.Unlock()
	if !ok {
		writeError(w, r, http.StatusNotFound, "NAME_UNKNOWN", "repository unknown")
		return
	}
	slices.Sort(tags)
	q := r.URL.Query()
	if last := q.Get("last"); last != "" {
		i, _ := slices.BinarySearch(tags, last)
		for i < len(tags) && tags[i] <= last {
			i++
		}
		tags = tags[i:]
	}
	if n, err := strconv.Atoi(q.Get("n")); err == nil && n >= 0 && n < len(tags) {
		tags = tags[:n]
		next := url.Values{"n": {strconv.Itoa(n)}}
		if n > 0 {
			next.Set("last", tags[n-1])
		}
		w.Header().Set("Link", fmt.Sprintf(`</v2/%s/tags/list?%s>; rel="next"`, repo, next.Encode()))
	}
	if tags == nil {
		tags = []string{}
	}
	body := fmt.Sprintf(`{"name":%q,"tags":[`, repo)
	for i, t := range tags {
		if i > 0 {
			body += ","
		}
		body += strconv.Quote(t)
	}
	body += "]}"
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(body))
}
