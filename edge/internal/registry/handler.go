// Package registry is the edge's HTTP boundary: the pull side of the OCI
// Distribution Spec (edge/README.md, "Registry API and errors") over a
// cache.Cache. It parses requests with route, answers byte-exact manifests
// and ranged blobs, and is the one place where errors become OCI error JSON.
package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/cache"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/metrics"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/route"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream"
)

// Snapshot is one immutable configuration of the edge: routing table,
// upstream clients and the namespace's policy.
type Snapshot interface {
	Table() *route.Table
	cache.Upstreams
	Policy() Policy
}

// Routes gives the current Snapshot; the control client swaps it. The
// handler loads it once per request and passes that one snapshot to every
// step of the request (parsing, policy, each cache call and the blob fill
// that outlives the request), so a configuration change never mixes two
// snapshots in one pull. Current returns nil when there is none.
type Routes interface {
	Current() Snapshot
}

// Handler serves /v2/.
type Handler struct {
	routes Routes
	cache  *cache.Cache
	m      *metrics.Metrics
	log    *slog.Logger
}

// New returns a Handler.
func New(routes Routes, c *cache.Cache, m *metrics.Metrics, log *slog.Logger) *Handler {
	return &Handler{routes: routes, cache: c, m: m, log: log}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	snap := h.routes.Current()
	if snap == nil {
		// The edge installs a snapshot before it serves: none here is a
		// bug, answered as "not ready", never with another configuration.
		h.log.Error("no configuration snapshot for a registry request", "method", r.Method, "path", r.URL.Path)
		w.Header().Set("Retry-After", "5")
		oci.WriteError(w, r, oci.NewError(http.StatusServiceUnavailable, oci.CodeUnavailable, "edge not ready: no configuration"))
		return
	}
	policy := snap.Policy()
	// The token comes first: a client without it learns nothing, not even
	// which prefixes exist.
	if !policy.authorized(r) {
		challenge(w, r)
		return
	}
	rt, err := snap.Table().Parse(r.URL.Path, r.URL.Query())
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		// Checked after parsing only to label metrics; the edge is pull-only.
		w.Header().Set("Allow", "GET, HEAD")
		oci.WriteError(w, r, oci.NewError(http.StatusMethodNotAllowed, oci.CodeUnsupported, "the edge is a pull-only cache; "+r.Method+" is not supported"))
		return
	}
	if err != nil {
		oci.WriteError(w, r, routeError(err))
		return
	}
	if rt.Kind != route.KindBase && !policy.Allows(rt.Prefix) {
		oci.WriteError(w, r, oci.NewError(http.StatusNotFound, oci.CodeNameUnknown,
			"prefix not allowed for this namespace: "+rt.Prefix))
		return
	}
	switch rt.Kind {
	case route.KindBase:
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "2")
		if r.Method == http.MethodGet {
			_, _ = io.WriteString(w, "{}")
		}
	case route.KindManifest:
		h.serveManifest(w, r, snap, rt)
	case route.KindBlob:
		h.serveBlob(w, r, snap, rt)
	case route.KindTags:
		h.serveTags(w, r, snap, rt)
	}
}

func (h *Handler) serveManifest(w http.ResponseWriter, r *http.Request, snap Snapshot, rt route.Route) {
	m, err := h.cache.Manifest(r.Context(), snap, rt)
	if err != nil {
		h.fail(w, r, rt, err)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", m.ContentType)
	hdr.Set("Docker-Content-Digest", m.Digest.String())
	hdr.Set("ETag", `"`+m.Digest.String()+`"`)
	hdr.Set("Content-Length", strconv.Itoa(len(m.Body)))
	hdr.Set("X-Cache", cacheHeader(m.Source))
	if inm := r.Header.Get("If-None-Match"); inm != "" && strings.Contains(inm, m.Digest.String()) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if r.Method == http.MethodHead {
		return
	}
	n, _ := w.Write(m.Body)
	h.m.BytesServed.WithLabelValues(m.Source).Add(float64(n))
}

func (h *Handler) serveBlob(w http.ResponseWriter, r *http.Request, snap Snapshot, rt route.Route) {
	var b *cache.Blob
	if r.Method == http.MethodHead {
		// A HEAD never starts a fill: the size comes from storage or
		// from an upstream HEAD.
		size, source, err := h.cache.BlobSize(r.Context(), snap, rt)
		if err != nil {
			h.fail(w, r, rt, err)
			return
		}
		b = &cache.Blob{Size: size, Source: source}
	} else {
		var err error
		if b, err = h.cache.Blob(r.Context(), snap, rt); err != nil {
			h.fail(w, r, rt, err)
			return
		}
	}
	defer b.Close()
	hdr := w.Header()
	hdr.Set("Content-Type", "application/octet-stream")
	hdr.Set("Docker-Content-Digest", rt.Digest.String())
	hdr.Set("ETag", `"`+rt.Digest.String()+`"`)
	hdr.Set("X-Cache", cacheHeader(b.Source))
	hdr.Set("Cache-Control", "max-age=31536000, immutable")
	status, off, n := http.StatusOK, int64(0), b.Size
	if b.Size >= 0 {
		hdr.Set("Accept-Ranges", "bytes")
		if spec := r.Header.Get("Range"); spec != "" {
			var err error
			off, n, err = parseRange(spec, b.Size)
			if err != nil {
				hdr.Set("Content-Range", fmt.Sprintf("bytes */%d", b.Size))
				oci.WriteError(w, r, oci.NewError(http.StatusRequestedRangeNotSatisfiable, oci.CodeRangeInvalid, err.Error()))
				return
			}
			status = http.StatusPartialContent
			hdr.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, b.Size))
		}
		hdr.Set("Content-Length", strconv.FormatInt(n, 10))
	}
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return
	}
	rc, err := b.Open(r.Context(), off, n)
	if err != nil {
		h.fail(w, r, rt, err)
		return
	}
	defer rc.Close()
	w.WriteHeader(status)
	written, err := copyBody(w, rc, b.Source == metrics.SourceCache)
	h.m.BytesServed.WithLabelValues(b.Source).Add(float64(written))
	if err != nil || (n >= 0 && written != n) {
		if r.Context().Err() == nil {
			h.log.Warn("blob transfer broken", "digest", rt.Digest.String(), "written", written, "want", n, "err", err)
		}
		// Abort the connection so the client sees a broken transfer, never
		// a short body it might take for complete.
		panic(http.ErrAbortHandler)
	}
}

func (h *Handler) serveTags(w http.ResponseWriter, r *http.Request, snap Snapshot, rt route.Route) {
	tl, err := h.cache.Tags(r.Context(), snap, rt, r.URL.Query())
	if err != nil {
		h.fail(w, r, rt, err)
		return
	}
	ct := tl.ContentType
	if ct == "" {
		ct = "application/json"
	}
	w.Header().Set("Content-Type", ct)
	if link := rewriteLink(tl.Link, r.URL.Path); link != "" {
		w.Header().Set("Link", link)
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(tl.Body)))
	if r.Method == http.MethodGet {
		_, _ = w.Write(tl.Body)
	}
}

// rewriteLink points an upstream pagination Link at this edge's path, so the
// next page is requested through the edge with the client's own name.
func rewriteLink(link, path string) string {
	start, end := strings.IndexByte(link, '<'), strings.IndexByte(link, '>')
	if start < 0 || end < start {
		return ""
	}
	target := link[start+1 : end]
	_, query, _ := strings.Cut(target, "?")
	if query == "" {
		return ""
	}
	return "<" + path + "?" + query + ">" + link[end+1:]
}

func cacheHeader(source string) string {
	if source == metrics.SourceCache {
		return "HIT"
	}
	return "MISS"
}

// fail translates a cache or upstream error into OCI error JSON.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, rt route.Route, err error) {
	e := h.classify(rt, err)
	if e.Status >= 500 {
		h.log.Warn("request failed", "kind", rt.Kind.String(), "prefix", rt.Prefix, "repository", rt.Repository,
			"reference", rt.Reference(), "status", e.Status, "err", err)
	}
	var se *upstream.StatusError
	var te *cache.ThrottledError
	switch {
	case errors.As(err, &te):
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(te.RetryAfter)))
	case errors.As(err, &se) && se.RetryAfter > 0:
		w.Header().Set("Retry-After", strconv.Itoa(int(se.RetryAfter.Seconds()+0.5)))
	}
	oci.WriteError(w, r, e)
}

func (h *Handler) classify(rt route.Route, err error) *oci.Error {
	unknown := oci.CodeManifestUnknown
	what := "manifest"
	switch rt.Kind {
	case route.KindBlob:
		unknown, what = oci.CodeBlobUnknown, "blob"
	case route.KindTags:
		unknown, what = oci.CodeNameUnknown, "repository"
	}
	ref := rt.Prefix + "/" + rt.Repository
	if rt.Kind != route.KindTags {
		ref += "@" + rt.Reference()
		if rt.Tag != "" {
			ref = rt.Prefix + "/" + rt.Repository + ":" + rt.Tag
		}
	}
	switch {
	case errors.Is(err, cache.ErrNoSnapshot):
		return oci.NewError(http.StatusServiceUnavailable, oci.CodeUnavailable, "edge not ready: no configuration")
	case errors.Is(err, cache.ErrThrottled):
		return oci.NewError(http.StatusTooManyRequests, oci.CodeTooManyRequests,
			"this namespace's upstream request limit is reached; retry after Retry-After seconds: "+ref)
	case errors.Is(err, cache.ErrUnknownUpstream):
		return oci.NewError(http.StatusNotFound, oci.CodeNameUnknown, "no upstream for prefix "+rt.Prefix)
	case errors.Is(err, upstream.ErrNotFound):
		return oci.NewError(http.StatusNotFound, unknown, what+" unknown upstream: "+ref)
	case errors.Is(err, upstream.ErrUnauthorized):
		return oci.NewError(http.StatusUnauthorized, oci.CodeUnauthorized, "upstream requires authorization for "+ref)
	case errors.Is(err, upstream.ErrDenied):
		return oci.NewError(http.StatusForbidden, oci.CodeDenied, "upstream denied access to "+ref)
	case errors.Is(err, upstream.ErrTooManyRequests):
		return oci.NewError(http.StatusTooManyRequests, oci.CodeTooManyRequests, "upstream rate limit reached for "+ref)
	case errors.Is(err, upstream.ErrDigestMismatch):
		return oci.NewError(http.StatusBadGateway, oci.CodeDigestInvalid, "upstream sent content that does not match its digest: "+ref)
	case errors.Is(err, upstream.ErrTooLarge):
		return oci.NewError(http.StatusBadGateway, oci.CodeManifestInvalid, fmt.Sprintf("upstream %s exceeds %d bytes: %s", what, oci.MaxManifestSize, ref))
	case errors.Is(err, upstream.ErrNotManifest):
		return oci.NewError(http.StatusBadGateway, oci.CodeManifestInvalid, "upstream sent something that is not a manifest for "+ref)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return oci.NewError(http.StatusGatewayTimeout, oci.CodeUnknown, "timed out fetching "+ref)
	case upstream.IsUnavailable(err):
		return oci.NewError(http.StatusBadGateway, oci.CodeUnknown, "upstream unavailable for "+ref)
	}
	return oci.NewError(http.StatusBadGateway, oci.CodeUnknown, "fetching "+ref+" failed")
}

// retryAfterSeconds is a Retry-After value: whole seconds, rounded up so
// a client that waits them finds a token, and at least 1.
func retryAfterSeconds(d time.Duration) int {
	return max(1, int((d+time.Second-1)/time.Second))
}

// routeError maps a path that does not parse onto its OCI error.
func routeError(err error) *oci.Error {
	switch {
	case errors.Is(err, route.ErrNameInvalid):
		return oci.NewError(http.StatusBadRequest, oci.CodeNameInvalid, err.Error())
	case errors.Is(err, route.ErrNameUnknown):
		return oci.NewError(http.StatusNotFound, oci.CodeNameUnknown, err.Error())
	case errors.Is(err, route.ErrDigestInvalid):
		return oci.NewError(http.StatusBadRequest, oci.CodeDigestInvalid, err.Error())
	case errors.Is(err, route.ErrTagInvalid):
		return oci.NewError(http.StatusBadRequest, oci.CodeManifestInvalid, err.Error())
	}
	return oci.NewError(http.StatusNotFound, oci.CodeNameUnknown, "not a registry API path")
}
