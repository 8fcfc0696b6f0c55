package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/metrics"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/route"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream"
)

// Manifest is a manifest ready to serve, byte-for-byte as the upstream sent it.
type Manifest struct {
	Body        []byte
	ContentType string
	Digest      oci.Digest
	// Source is metrics.SourceCache or metrics.SourceUpstream.
	Source string
	// Stale is set when a tag was served past its TTL because the upstream
	// could not be reached.
	Stale bool
}

// tagRecord is what a namespace's tag points at, stored at blob.TagKey
// (edge/README.md, "Storage").
type tagRecord struct {
	Digest      string    `json:"digest"`
	MediaType   string    `json:"mediaType"`
	FetchedAt   time.Time `json:"fetchedAt"`
	LastChecked time.Time `json:"lastChecked"`
}

// Manifest returns the manifest rt addresses, by tag or by digest, with
// the upstreams and tag TTLs of the request's snapshot ups.
func (c *Cache) Manifest(ctx context.Context, ups Upstreams, rt route.Route) (*Manifest, error) {
	ctx = blob.WithScope(ctx, rt.Prefix, rt.Repository)
	f, err := fetcher(ups, rt.Prefix)
	if err != nil {
		return nil, err
	}
	if rt.Tag == "" {
		return c.manifestByDigest(ctx, f, rt)
	}
	return c.manifestByTag(ctx, f, c.tagTTLFor(ups, rt.Prefix), rt)
}

func (c *Cache) manifestByDigest(ctx context.Context, f upstream.Fetcher, rt route.Route) (*Manifest, error) {
	if m, err := c.loadManifest(ctx, rt.Digest); err == nil {
		c.m.Hits.WithLabelValues("manifest").Inc()
		return m, nil
	}
	c.m.Misses.WithLabelValues("manifest").Inc()
	return c.fetchManifest(ctx, f, rt, rt.Digest.String())
}

func (c *Cache) manifestByTag(ctx context.Context, f upstream.Fetcher, tagTTL time.Duration, rt route.Route) (*Manifest, error) {
	key, err := blob.TagKey(c.namespace, rt.Prefix, rt.Repository, rt.Tag)
	if err != nil {
		return nil, fmt.Errorf("tag key: %w", err)
	}
	rec, err := c.readTag(ctx, key)
	if err != nil {
		c.m.Misses.WithLabelValues("manifest").Inc()
		return c.fetchManifest(ctx, f, rt, rt.Tag)
	}
	d, err := oci.ParseDigest(rec.Digest)
	if err != nil {
		c.log.Warn("corrupt tag record, refetching", "key", key, "err", err)
		c.m.Misses.WithLabelValues("manifest").Inc()
		return c.fetchManifest(ctx, f, rt, rt.Tag)
	}
	if c.now().Sub(rec.LastChecked) < tagTTL {
		if m, err := c.loadManifest(ctx, d); err == nil {
			c.m.Hits.WithLabelValues("manifest").Inc()
			return m, nil
		}
		c.m.Misses.WithLabelValues("manifest").Inc()
		return c.fetchManifest(ctx, f, rt, rt.Tag)
	}
	return c.revalidate(ctx, f, rt, key, rec, d)
}

// revalidate asks the upstream with HEAD whether a stale tag still points at
// the cached digest. HEAD does not count against Docker Hub's pull limit.
func (c *Cache) revalidate(ctx context.Context, f upstream.Fetcher, rt route.Route, key string, rec tagRecord, d oci.Digest) (*Manifest, error) {
	v, err, _ := c.do(ctx, "revalidate:"+key, func(ctx context.Context) (any, error) {
		if err := c.allowUpstream("manifest"); err != nil {
			return nil, err
		}
		head, err := f.Manifest(ctx, rt.Repository, rt.Tag, true)
		c.countUpstream(rt.Prefix, "manifest", http.MethodHead, err)
		if err != nil {
			return nil, err
		}
		return head, nil
	})
	if err != nil {
		// A cached manifest is never refused for the rate limit: the
		// namespace gets its stale tag, as when the upstream is down.
		if upstream.IsUnavailable(err) || errors.Is(err, ErrThrottled) {
			if m, lerr := c.loadManifest(ctx, d); lerr == nil {
				c.m.StaleServes.Inc()
				c.m.Hits.WithLabelValues("manifest").Inc()
				c.log.Warn("upstream unreachable or rate-limited, serving stale tag", "prefix", rt.Prefix, "repository", rt.Repository,
					"tag", rt.Tag, "digest", d.String(), "age", c.now().Sub(rec.LastChecked).Round(time.Second), "err", err)
				m.Stale = true
				return m, nil
			}
		}
		return nil, fmt.Errorf("revalidate %s/%s:%s: %w", rt.Prefix, rt.Repository, rt.Tag, err)
	}
	head := v.(*upstream.Manifest)
	if !head.Digest.IsZero() && head.Digest == d {
		if m, err := c.loadManifest(ctx, d); err == nil {
			rec.LastChecked = c.now()
			c.writeTag(ctx, key, rec)
			c.m.Hits.WithLabelValues("manifest").Inc()
			return m, nil
		}
	}
	c.m.Misses.WithLabelValues("manifest").Inc()
	return c.fetchManifest(ctx, f, rt, rt.Tag)
}

// fetchManifest gets a manifest from upstream (one request for all
// concurrent callers), stores it and, for a tag, the namespace's record.
func (c *Cache) fetchManifest(ctx context.Context, f upstream.Fetcher, rt route.Route, ref string) (*Manifest, error) {
	v, err, _ := c.do(ctx, "manifest:"+c.namespace+"/"+rt.Prefix+"/"+rt.Repository+":"+ref, func(ctx context.Context) (any, error) {
		if err := c.allowUpstream("manifest"); err != nil {
			return nil, err
		}
		um, err := f.Manifest(ctx, rt.Repository, ref, false)
		c.countUpstream(rt.Prefix, "manifest", http.MethodGet, err)
		if err != nil {
			return nil, err
		}
		m, err := c.verifiedManifest(um, rt)
		if err != nil {
			return nil, err
		}
		c.storeManifest(ctx, m)
		if rt.Tag != "" {
			if key, err := blob.TagKey(c.namespace, rt.Prefix, rt.Repository, rt.Tag); err == nil {
				now := c.now()
				c.writeTag(ctx, key, tagRecord{Digest: m.Digest.String(), MediaType: m.ContentType, FetchedAt: now, LastChecked: now})
			}
		}
		return m, nil
	})
	if err != nil {
		return nil, fmt.Errorf("fetch manifest %s/%s:%s: %w", rt.Prefix, rt.Repository, ref, err)
	}
	m := *v.(*Manifest)
	return &m, nil
}

// verifiedManifest checks an upstream manifest against the request and
// computes its digest; the upstream client has already checked it against
// Docker-Content-Digest.
func (c *Cache) verifiedManifest(um *upstream.Manifest, rt route.Route) (*Manifest, error) {
	if len(um.Body) > oci.MaxManifestSize {
		return nil, fmt.Errorf("%w: manifest of %d bytes", upstream.ErrTooLarge, len(um.Body))
	}
	d := oci.FromBytes(um.Body)
	if !rt.Digest.IsZero() {
		h := rt.Digest.Hash()
		h.Write(um.Body)
		if !rt.Digest.Matches(h) {
			return nil, fmt.Errorf("%w: body does not match %s", upstream.ErrDigestMismatch, rt.Digest)
		}
		d = rt.Digest
	}
	ct := um.ContentType
	if !oci.IsManifestMediaType(ct) {
		// Some registries answer application/json; the body says what it
		// is. Anything else (an HTML page from a captive portal or a login
		// redirect) is refused, so it is neither cached nor served as a
		// manifest.
		var probe struct {
			MediaType string `json:"mediaType"`
		}
		if json.Unmarshal(um.Body, &probe) != nil || !oci.IsManifestMediaType(probe.MediaType) {
			return nil, fmt.Errorf("%w: Content-Type %q", upstream.ErrNotManifest, ct)
		}
		ct = probe.MediaType
	}
	return &Manifest{Body: um.Body, ContentType: ct, Digest: d, Source: metrics.SourceUpstream}, nil
}

// storeManifest writes m under its digest; a storage failure only costs the
// caching, never the pull.
func (c *Cache) storeManifest(ctx context.Context, m *Manifest) {
	if !c.storeUsable() {
		return
	}
	key := blob.ManifestKey(m.Digest)
	if _, err := c.store.Stat(ctx, key); err == nil {
		return
	}
	w, err := c.store.Create(ctx, key, blob.Expect{Digest: m.Digest, Size: int64(len(m.Body)), ContentType: m.ContentType})
	if err != nil {
		c.storeFailed("create", err)
		return
	}
	if _, err := w.Write(m.Body); err != nil {
		_ = w.Abort(ctx)
		c.storeFailed("write", err)
		return
	}
	if err := w.Commit(ctx); err != nil {
		c.storeFailed("commit", err)
		return
	}
	c.storageOK()
}

// loadManifest reads a stored manifest; any error means "not cached".
func (c *Cache) loadManifest(ctx context.Context, d oci.Digest) (*Manifest, error) {
	if !c.storeUsable() {
		return nil, blob.ErrNotFound
	}
	key := blob.ManifestKey(d)
	info, err := c.store.Stat(ctx, key)
	if err != nil {
		c.noteStoreErr("stat", err)
		return nil, err
	}
	if info.Size > oci.MaxManifestSize {
		return nil, fmt.Errorf("stored manifest %s too large", d)
	}
	rc, err := c.store.Open(ctx, key, 0, -1)
	if err != nil {
		c.noteStoreErr("open", err)
		return nil, err
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, oci.MaxManifestSize+1))
	if err != nil {
		c.noteStoreErr("read", err)
		return nil, err
	}
	// The store verified the digest when it was written; checking again on
	// read costs microseconds and catches a corrupted object.
	h := d.Hash()
	h.Write(body)
	if !d.Matches(h) {
		c.log.Error("stored manifest does not match its digest; refetching", "digest", d.String())
		return nil, fmt.Errorf("%w: stored manifest %s", blob.ErrVerify, d)
	}
	return &Manifest{Body: body, ContentType: info.ContentType, Digest: d, Source: metrics.SourceCache}, nil
}

func (c *Cache) readTag(ctx context.Context, key string) (tagRecord, error) {
	var rec tagRecord
	if !c.storeUsable() {
		return rec, blob.ErrNotFound
	}
	rc, err := c.store.Open(ctx, key, 0, -1)
	if err != nil {
		c.noteStoreErr("open", err)
		return rec, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, 64<<10))
	if err != nil {
		c.noteStoreErr("read", err)
		return rec, err
	}
	if err := json.NewDecoder(bytes.NewReader(data)).Decode(&rec); err != nil {
		return rec, fmt.Errorf("decode tag record %s: %w", key, err)
	}
	if c.clampFuture(key, &rec) {
		// Stored as now, so the record ages from here: left as it was it
		// would read as fresh forever.
		c.writeTag(ctx, key, rec)
	}
	return rec, nil
}

// clampFuture treats times after now in a tag record as now and reports
// whether it changed anything: a record "checked in 2099" (a skewed clock,
// or a hand-made record in shared storage) would never be revalidated. It
// warns once per Cache, then at debug level, so a fleet of such records
// does not flood the log.
func (c *Cache) clampFuture(key string, rec *tagRecord) bool {
	now := c.now()
	if !rec.LastChecked.After(now) && !rec.FetchedAt.After(now) {
		return false
	}
	level := slog.LevelDebug
	if c.futureWarned.CompareAndSwap(false, true) {
		level = slog.LevelWarn
	}
	c.log.Log(context.Background(), level, "tag record has times in the future; treating them as now",
		"key", key, "last_checked", rec.LastChecked, "fetched_at", rec.FetchedAt)
	if rec.LastChecked.After(now) {
		rec.LastChecked = now
	}
	if rec.FetchedAt.After(now) {
		rec.FetchedAt = now
	}
	return true
}

func (c *Cache) writeTag(ctx context.Context, key string, rec tagRecord) {
	if !c.storeUsable() {
		return
	}
	data, _ := json.Marshal(rec)
	if err := c.store.Put(ctx, key, data, "application/json"); err != nil {
		c.storeFailed("put", err)
	}
}

// noteStoreErr records a failed read: not-found is a plain miss, a
// refusal by the storage broker a miss too (the caller goes upstream with
// the edge's own credentials), anything else a storage fault.
func (c *Cache) noteStoreErr(op string, err error) {
	if !errors.Is(err, blob.ErrNotFound) && !errors.Is(err, context.Canceled) {
		c.storeFailed(op, err)
	}
}

// do runs fn once for all concurrent callers with the same key. fn runs
// detached from any one caller's cancellation (a client that disconnects
// must not fail the others), bounded by the upstream request timeout.
func (c *Cache) do(ctx context.Context, key string, fn func(context.Context) (any, error)) (any, error, bool) { //nolint:revive // error-return: the results of singleflight.Group.Do, in its order
	ch := c.flights.DoChan(key, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.requestTTL)
		defer cancel()
		return fn(fctx)
	})
	select {
	case r := <-ch:
		return r.Val, r.Err, r.Shared
	case <-ctx.Done():
		return nil, ctx.Err(), false
	}
}
