package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sync"
	"sync/atomic"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream"
)

// fakeUpstream is an in-memory upstream.Fetcher for unit tests; the real
// client against real registries is covered in upstream and test/e2e.
type fakeUpstream struct {
	mu        sync.Mutex
	manifests map[string][]byte // by tag and by digest
	blobs     map[string][]byte // by digest; the served body may be wrong on purpose
	blobSize  map[string]int64  // announced size override
	down      atomic.Bool
	gate      chan struct{} // when set, blob bodies wait for it before their last chunk

	blobGets, blobHeads, manifestGets, manifestHeads atomic.Int64
}

func newFakeUpstream() *fakeUpstream {
	return &fakeUpstream{manifests: map[string][]byte{}, blobs: map[string][]byte{}, blobSize: map[string]int64{}}
}

var errDown = fmt.Errorf("dial upstream: connection refused: %w", upstream.ErrUnavailable)

func (f *fakeUpstream) setTag(tag string, body []byte) oci.Digest {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := oci.FromBytes(body)
	f.manifests[tag] = body
	f.manifests[d.String()] = body
	return d
}

func (f *fakeUpstream) Manifest(_ context.Context, _, ref string, head bool) (*upstream.Manifest, error) {
	if head {
		f.manifestHeads.Add(1)
	} else {
		f.manifestGets.Add(1)
	}
	if f.down.Load() {
		return nil, errDown
	}
	f.mu.Lock()
	body, ok := f.manifests[ref]
	f.mu.Unlock()
	if !ok {
		return nil, &upstream.StatusError{Op: "fetch manifest", Status: 404, Code: "MANIFEST_UNKNOWN"}
	}
	m := &upstream.Manifest{ContentType: oci.MediaTypeOCIManifest, Digest: oci.FromBytes(body), Size: int64(len(body))}
	if !head {
		m.Body = body
	}
	return m, nil
}

func (f *fakeUpstream) Blob(_ context.Context, _ string, d oci.Digest) (*upstream.Blob, error) {
	f.blobGets.Add(1)
	if f.down.Load() {
		return nil, errDown
	}
	f.mu.Lock()
	body, ok := f.blobs[d.String()]
	size, sized := f.blobSize[d.String()]
	f.mu.Unlock()
	if !ok {
		return nil, &upstream.StatusError{Op: "fetch blob", Status: 404, Code: "BLOB_UNKNOWN"}
	}
	if !sized {
		size = int64(len(body))
	}
	var r io.Reader = bytes.NewReader(body)
	if size > int64(len(body)) {
		// A short body: the stream breaks before the announced length.
		r = io.MultiReader(r, errReader{io.ErrUnexpectedEOF})
	}
	if f.gate != nil {
		r = &gatedReader{r: r, gate: f.gate, remaining: len(body)}
	}
	return &upstream.Blob{Body: io.NopCloser(r), Size: size}, nil
}

func (f *fakeUpstream) BlobSize(_ context.Context, _ string, d oci.Digest) (int64, error) {
	f.blobHeads.Add(1)
	if f.down.Load() {
		return 0, errDown
	}
	f.mu.Lock()
	body, ok := f.blobs[d.String()]
	f.mu.Unlock()
	if !ok {
		return 0, &upstream.StatusError{Op: "check blob", Status: 404, Code: "BLOB_UNKNOWN"}
	}
	return int64(len(body)), nil
}

func (f *fakeUpstream) Tags(context.Context, string, url.Values) (*upstream.TagList, error) {
	return &upstream.TagList{Body: []byte(`{"name":"x","tags":["v1"]}`), ContentType: "application/json"}, nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// gatedReader hands out all but the last byte, then waits for gate.
type gatedReader struct {
	r         io.Reader
	gate      chan struct{}
	remaining int
}

func (g *gatedReader) Read(p []byte) (int, error) {
	if g.remaining == 1 {
		<-g.gate
	} else if len(p) > g.remaining-1 && g.remaining > 1 {
		p = p[:g.remaining-1]
	}
	n, err := g.r.Read(p)
	g.remaining -= n
	return n, err
}

// failingStore wraps a store and fails every call while broken is set,
// standing in for an unreachable S3.
type upstreamSet map[string]upstream.Fetcher

func (u upstreamSet) Fetcher(p string) (upstream.Fetcher, bool) { f, ok := u[p]; return f, ok }

var errStorageDown = errors.New("storage: connection refused")
