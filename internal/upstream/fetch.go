package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
)

// maxTagListSize bounds a tag list read into memory. Registries that do not
// paginate return every tag at once; 16 MiB is several hundred thousand.
const maxTagListSize = 16 << 20

// Manifest fetches (GET) or checks (HEAD) repository:reference. reference is
// a tag or a digest; a digest reference is verified against the body.
func (c *Client) Manifest(ctx context.Context, repository, reference string, head bool) (*Manifest, error) {
	sep := ":"
	if strings.Contains(reference, ":") {
		sep = "@"
	}
	op := "fetch manifest"
	if head {
		op = "check manifest"
	}
	wrap := func(err error) error {
		return fmt.Errorf("%s %s/%s%s%s: %w", op, c.host, repository, sep, reference, err)
	}
	if err := validRepository(repository); err != nil {
		return nil, wrap(err)
	}
	var want oci.Digest
	if sep == "@" {
		d, err := oci.ParseDigest(reference)
		if err != nil {
			return nil, wrap(err)
		}
		want = d
	} else if !oci.ValidTag(reference) {
		return nil, wrap(errors.New("invalid tag"))
	}
	path := "/v2/" + repository + "/manifests/" + reference

	if head {
		resp, err := c.do(ctx, op, repository, http.MethodHead, path, nil, oci.ManifestAccept)
		if err != nil {
			return nil, wrap(err)
		}
		drain(resp)
		m, err := headManifest(resp, want)
		if err != nil {
			return nil, wrap(err)
		}
		return m, nil
	}

	resp, body, err := c.getWhole(ctx, op, repository, path, nil, oci.ManifestAccept, oci.MaxManifestSize)
	if err != nil {
		return nil, wrap(err)
	}
	m, err := getManifest(resp, body, want)
	if err != nil {
		return nil, wrap(err)
	}
	return m, nil
}

func headManifest(resp *http.Response, want oci.Digest) (*Manifest, error) {
	hdr, err := contentDigest(resp)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > oci.MaxManifestSize {
		return nil, fmt.Errorf("%w: manifest of %d bytes exceeds the %d-byte limit", ErrTooLarge, resp.ContentLength, oci.MaxManifestSize)
	}
	if !want.IsZero() && !hdr.IsZero() && hdr.Algorithm == want.Algorithm && hdr != want {
		return nil, fmt.Errorf("%w: upstream announced %s", ErrDigestMismatch, hdr)
	}
	d := hdr
	if !want.IsZero() {
		d = want
	}
	return &Manifest{ContentType: resp.Header.Get("Content-Type"), Digest: d, Size: resp.ContentLength}, nil
}

func getManifest(resp *http.Response, body []byte, want oci.Digest) (*Manifest, error) {
	hdr, err := contentDigest(resp)
	if err != nil {
		return nil, err
	}
	for _, d := range []oci.Digest{hdr, want} {
		if d.IsZero() {
			continue
		}
		h := d.Hash()
		h.Write(body)
		if !d.Matches(h) {
			return nil, fmt.Errorf("%w: body of %d bytes does not hash to %s", ErrDigestMismatch, len(body), d)
		}
	}
	// Both checks passed, so the digests name the same bytes; the requested
	// one is preferred in case the upstream announced another algorithm.
	d := want
	if d.IsZero() {
		d = hdr
	}
	if d.IsZero() {
		d = oci.FromBytes(body)
	}
	return &Manifest{Body: body, ContentType: resp.Header.Get("Content-Type"), Digest: d, Size: int64(len(body))}, nil
}

// contentDigest returns the validated Docker-Content-Digest, zero if absent.
func contentDigest(resp *http.Response) (oci.Digest, error) {
	v := resp.Header.Get("Docker-Content-Digest")
	if v == "" {
		return oci.Digest{}, nil
	}
	d, err := oci.ParseDigest(v)
	if err != nil {
		return oci.Digest{}, fmt.Errorf("upstream sent a bad Docker-Content-Digest: %w", err)
	}
	return d, nil
}

// Blob opens the blob d of repository. The body streams from the upstream
// (or the object storage it redirects to); read errors wrap ErrUnavailable.
func (c *Client) Blob(ctx context.Context, repository string, d oci.Digest) (*Blob, error) {
	wrap := func(err error) error {
		return fmt.Errorf("fetch blob %s/%s@%s: %w", c.host, repository, d, err)
	}
	if err := validRepository(repository); err != nil {
		return nil, wrap(err)
	}
	if _, err := oci.ParseDigest(d.String()); err != nil {
		return nil, wrap(err)
	}
	// The body's own context: the idle timer cancels it to unblock a read
	// that waits forever.
	bctx, cancel := context.WithCancel(ctx)
	resp, err := c.do(bctx, "fetch blob", repository, http.MethodGet, "/v2/"+repository+"/blobs/"+d.String(), nil, "")
	if err != nil {
		cancel()
		return nil, wrap(err)
	}
	return &Blob{
		Body: newBlobBody(ctx, cancel, resp.Body, c.host+"/"+repository+"@"+d.String(), c.opts.bodyIdle),
		Size: resp.ContentLength,
	}, nil
}

// BlobSize checks the blob d of repository with HEAD: a client's HEAD of
// a blob the edge has not cached is answered without transferring it.
func (c *Client) BlobSize(ctx context.Context, repository string, d oci.Digest) (int64, error) {
	wrap := func(err error) error {
		return fmt.Errorf("check blob %s/%s@%s: %w", c.host, repository, d, err)
	}
	if err := validRepository(repository); err != nil {
		return 0, wrap(err)
	}
	if _, err := oci.ParseDigest(d.String()); err != nil {
		return 0, wrap(err)
	}
	resp, err := c.do(ctx, "check blob", repository, http.MethodHead, "/v2/"+repository+"/blobs/"+d.String(), nil, "")
	if err != nil {
		return 0, wrap(err)
	}
	drain(resp)
	return resp.ContentLength, nil
}

// blobBody marks a broken upstream stream as ErrUnavailable, so the cache
// can tell it from its own storage failures, and ends a read that gets no
// byte for idle.
type blobBody struct {
	ctx    context.Context // the caller's
	cancel context.CancelFunc
	rc     io.ReadCloser
	what   string
	idle   time.Duration
	timer  *time.Timer
	idled  atomic.Bool
}

func newBlobBody(ctx context.Context, cancel context.CancelFunc, rc io.ReadCloser, what string, idle time.Duration) *blobBody {
	b := &blobBody{ctx: ctx, cancel: cancel, rc: rc, what: what, idle: idle}
	if idle > 0 {
		b.timer = time.AfterFunc(idle, func() {
			b.idled.Store(true)
			cancel()
		})
		b.timer.Stop()
	}
	return b
}

func (b *blobBody) Read(p []byte) (int, error) {
	if b.timer != nil {
		// Only the time spent waiting for the upstream counts.
		b.timer.Reset(b.idle)
	}
	n, err := b.rc.Read(p)
	if b.timer != nil {
		b.timer.Stop()
	}
	if err != nil && err != io.EOF {
		if b.idled.Load() {
			err = fmt.Errorf("read blob %s: no data for %v: %w", b.what, b.idle, ErrUnavailable)
		} else {
			err = fmt.Errorf("read blob %s: %w", b.what, readError(b.ctx, err))
		}
	}
	return n, err
}

func (b *blobBody) Close() error {
	if b.timer != nil {
		b.timer.Stop()
	}
	err := b.rc.Close()
	b.cancel()
	return err
}

// Tags lists the tags of repository. Only the spec's n and last parameters
// are passed on.
func (c *Client) Tags(ctx context.Context, repository string, query url.Values) (*TagList, error) {
	wrap := func(err error) error {
		return fmt.Errorf("list tags %s/%s: %w", c.host, repository, err)
	}
	if err := validRepository(repository); err != nil {
		return nil, wrap(err)
	}
	q := url.Values{}
	for _, k := range []string{"n", "last"} {
		if v := query.Get(k); v != "" {
			q.Set(k, v)
		}
	}
	resp, body, err := c.getWhole(ctx, "list tags", repository, "/v2/"+repository+"/tags/list", q, "application/json", maxTagListSize)
	if err != nil {
		return nil, wrap(err)
	}
	return &TagList{Body: body, ContentType: resp.Header.Get("Content-Type"), Link: resp.Header.Get("Link")}, nil
}

func validRepository(repository string) error {
	if !oci.ValidRepository(repository) {
		return errors.New("invalid repository name")
	}
	return nil
}

// do sends one request through the repository's auth transport and
// returns a 2xx response; anything else becomes a StatusError.
func (c *Client) do(ctx context.Context, op, repository, method, path string, query url.Values, accept string) (*http.Response, error) {
	rt, err := c.transportFor(ctx, repository)
	if err != nil {
		return nil, classify(ctx, err)
	}
	u := url.URL{Scheme: c.scheme, Host: c.host, Path: path, RawQuery: query.Encode()}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	client := http.Client{Transport: rt} // default policy: at most 10 redirects
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		err = redactURLError(err)
		c.log.DebugContext(ctx, "upstream request failed", "op", op, "method", method, "path", path,
			"duration", time.Since(start), "error", err.Error())
		return nil, classify(ctx, err)
	}
	c.log.DebugContext(ctx, "upstream request", "op", op, "method", method, "path", path,
		"status", resp.StatusCode, "duration", time.Since(start), "final_host", resp.Request.URL.Host)
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(op, resp)
	}
	return resp, nil
}

// getWhole GETs a small document and reads it whole, refusing more than
// limit bytes. A body that breaks mid-read is fetched again: nothing has
// been handed to the caller yet.
func (c *Client) getWhole(ctx context.Context, op, repository, path string, query url.Values, accept string, limit int64) (*http.Response, []byte, error) {
	for attempt := 1; ; attempt++ {
		resp, err := c.do(ctx, op, repository, http.MethodGet, path, query, accept)
		if err != nil {
			return nil, nil, err
		}
		if resp.ContentLength > limit {
			resp.Body.Close()
			return nil, nil, fmt.Errorf("%w: %d bytes announced, the limit is %d", ErrTooLarge, resp.ContentLength, limit)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
		resp.Body.Close()
		if err == nil {
			if int64(len(body)) > limit {
				return nil, nil, fmt.Errorf("%w: body exceeds the %d-byte limit", ErrTooLarge, limit)
			}
			return resp, body, nil
		}
		err = readError(ctx, err)
		if attempt >= c.opts.attempts || !errors.Is(err, ErrUnavailable) {
			return nil, nil, err
		}
		wait := jitter(c.opts.backoff, c.opts.maxRetryWait, attempt)
		c.log.InfoContext(ctx, "upstream body broke, fetching again", "op", op, "path", path, "attempt", attempt, "wait", wait, "error", err.Error())
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, nil, ctx.Err()
		case <-timer.C:
		}
	}
}
