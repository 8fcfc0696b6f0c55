package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/metrics"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/route"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
)

// Blob is a blob ready to serve: from storage or from a running fill.
// Close it when done.
type Blob struct {
	// Size in bytes, or -1 when a cold upstream sent no length.
	Size int64
	// Source is metrics.SourceCache or metrics.SourceUpstream.
	Source string
	open   func(ctx context.Context, off, n int64) (io.ReadCloser, error)
	close  func()
}

// Open returns the bytes [off, off+n) (n < 0: to the end). A reader of a
// cold blob follows the upstream transfer and fails if the transfer fails
// or does not verify.
func (b *Blob) Open(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	return b.open(ctx, off, n)
}

// Close releases the blob.
func (b *Blob) Close() {
	if b.close != nil {
		b.close()
	}
}

// Blob returns the blob rt addresses. A miss starts a fill from the
// upstream of the request's snapshot ups; the fill keeps ups to its end,
// even when it outlives the request.
func (c *Cache) Blob(ctx context.Context, ups Upstreams, rt route.Route) (*Blob, error) {
	if ups == nil {
		return nil, ErrNoSnapshot
	}
	// The fill inherits the scope (it runs on a detached copy of ctx): the
	// storage broker grants and accepts shared objects per repository.
	ctx = blob.WithScope(ctx, rt.Prefix, rt.Repository)
	key := blob.BlobKey(rt.Digest)
	if b, ok := c.storedBlob(ctx, key); ok {
		c.m.Hits.WithLabelValues("blob").Inc()
		return b, nil
	}
	c.m.Misses.WithLabelValues("blob").Inc()
	f, leader := c.fills.join(key)
	if leader {
		// The fill may have committed between our Stat and join.
		if b, ok := c.storedBlob(ctx, key); ok {
			c.fills.remove(f)
			f.finish(errSuperseded)
			f.release()
			f.release()
			return b, nil
		}
		c.running.add()
		go func() {
			defer c.running.done()
			c.runFill(context.WithoutCancel(ctx), ups, f, rt)
		}()
	}
	size, err := f.wait(ctx)
	if err != nil {
		f.release()
		if errors.Is(err, errSuperseded) {
			if b, ok := c.storedBlob(ctx, key); ok {
				return b, nil
			}
		}
		return nil, fmt.Errorf("fetch blob %s/%s@%s: %w", rt.Prefix, rt.Repository, rt.Digest, err)
	}
	var once sync.Once
	return &Blob{
		Size:   size,
		Source: metrics.SourceUpstream,
		open: func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
			return f.reader(ctx, off, n), nil
		},
		close: func() { once.Do(f.release) },
	}, nil
}

// BlobSize answers a HEAD of the blob rt addresses: from storage when it
// is cached, else from an upstream HEAD. It never starts a fill, so a
// client probing for a blob does not make the edge download it. ups is
// the request's configuration snapshot.
func (c *Cache) BlobSize(ctx context.Context, ups Upstreams, rt route.Route) (size int64, source string, err error) {
	if ups == nil {
		return 0, "", ErrNoSnapshot
	}
	ctx = blob.WithScope(ctx, rt.Prefix, rt.Repository)
	if b, ok := c.storedBlob(ctx, blob.BlobKey(rt.Digest)); ok {
		c.m.Hits.WithLabelValues("blob").Inc()
		return b.Size, b.Source, nil
	}
	c.m.Misses.WithLabelValues("blob").Inc()
	f, err := fetcher(ups, rt.Prefix)
	if err != nil {
		return 0, "", err
	}
	if err := c.allowUpstream("blob"); err != nil {
		return 0, "", err
	}
	size, err = f.BlobSize(ctx, rt.Repository, rt.Digest)
	c.countUpstream(rt.Prefix, "blob", http.MethodHead, err)
	if err != nil {
		return 0, "", err
	}
	return size, metrics.SourceUpstream, nil
}

func (c *Cache) storedBlob(ctx context.Context, key string) (*Blob, bool) {
	if !c.storeUsable() {
		return nil, false
	}
	info, err := c.store.Stat(ctx, key)
	if err != nil {
		c.noteStoreErr("stat", err)
		return nil, false
	}
	// The blob is opened later with the request's own context: it gets
	// the scope it was found in.
	prefix, repository, scoped := blob.ScopeFrom(ctx)
	return &Blob{
		Size:   info.Size,
		Source: metrics.SourceCache,
		open: func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
			if scoped {
				ctx = blob.WithScope(ctx, prefix, repository)
			}
			rc, err := c.store.Open(ctx, key, off, n)
			if err != nil {
				c.noteStoreErr("open", err)
			}
			return rc, err
		},
	}, true
}

// fillBufSize is the unit of upstream reads; large enough that syscalls do
// not dominate at loopback speed.
const fillBufSize = 256 << 10

var fillBufs = sync.Pool{New: func() any { b := make([]byte, fillBufSize); return &b }}

// runFill streams the blob from upstream into a spool (read by every
// waiting request) and into the store, then verifies and commits it. The
// fill is finished exactly once: by fillFrom on success, here on failure.
func (c *Cache) runFill(ctx context.Context, ups Upstreams, f *fill, rt route.Route) {
	ctx, cancel := context.WithTimeout(ctx, c.fillTTL)
	defer cancel()
	defer c.fills.remove(f)
	defer f.release()
	if err := c.allowUpstream("blob"); err != nil {
		f.finish(err)
		return
	}
	if err := c.acquireFillSlot(ctx); err != nil {
		c.log.Warn("blob fill gave up waiting for a fill slot", "prefix", rt.Prefix, "digest", rt.Digest.String(), "err", err)
		f.finish(fmt.Errorf("wait for a fill slot: %w", err))
		return
	}
	defer c.limiter.release()
	c.m.FillsInFlight.Inc()
	defer c.m.FillsInFlight.Dec()

	if err := c.fillFrom(ctx, ups, f, rt); err != nil {
		c.log.Warn("blob fill failed", "prefix", rt.Prefix, "repository", rt.Repository, "digest", rt.Digest.String(), "err", err)
		f.finish(err)
	}
}

func (c *Cache) fillFrom(ctx context.Context, ups Upstreams, f *fill, rt route.Route) error {
	up, err := fetcher(ups, rt.Prefix)
	if err != nil {
		return err
	}
	ub, err := up.Blob(ctx, rt.Repository, rt.Digest)
	c.countUpstream(rt.Prefix, "blob", http.MethodGet, err)
	if err != nil {
		return err
	}
	defer ub.Body.Close()

	t, err := c.newTransfer(ctx, rt, ub.Size)
	if err != nil {
		return err
	}
	f.start(ub.Size, t.spool, t.ownSpool)
	bufp := fillBufs.Get().(*[]byte)
	defer fillBufs.Put(bufp)
	buf := *bufp
	var read int64
	for {
		n, rerr := ub.Body.Read(buf)
		if n > 0 {
			read += int64(n)
			if err := t.write(buf[:n]); err != nil {
				t.abort()
				return err
			}
			if err := f.append(buf[:n]); err != nil {
				t.abort()
				return err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			t.abort()
			return fmt.Errorf("read upstream body after %d bytes: %w", read, rerr)
		}
	}
	if err := t.verify(); err != nil {
		t.abort()
		c.m.UpstreamErrors.WithLabelValues(rt.Prefix, "digest_mismatch").Inc()
		return fmt.Errorf("verify %s: %w", rt.Digest, err)
	}
	// Release the held-back last byte now: the content is verified, and the
	// clients need not wait for the store's fsync and rename.
	f.finish(nil)
	t.commit()
	return nil
}

// errSuperseded ends a fill that found the blob already committed; its
// followers read the stored blob instead.
var errSuperseded = errors.New("blob committed by an earlier fill")
