package cache

import (
	"context"
	"fmt"
	"os"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/route"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
)

// transfer is where the bytes of one fill go: the store's verified writer
// (when storage works) and a spool that the fill's readers follow.
//
// Every byte is hashed once. With a store writer, its own verifier is the
// one that counts (Writer.Verify); without one (degraded storage) the
// transfer hashes by itself. When the store's writer can be read back
// (blob.Spooler, the filesystem store) it is the spool too, so a cold blob
// is written to disk once, not twice.
type transfer struct {
	c        *Cache
	ctx      context.Context
	want     blob.Expect
	w        blob.Writer     // nil when storage is bypassed
	putter   blob.FilePutter // set instead of w: the store takes the verified spool at commit
	own      *blob.Verifier  // set when w is nil
	spool    *os.File
	ownSpool bool // spool is ours to write (not the store's file)
	written  int64
}

func (c *Cache) newTransfer(ctx context.Context, rt route.Route, size int64) (*transfer, error) {
	t := &transfer{c: c, ctx: ctx, want: blob.Expect{Digest: rt.Digest, Size: size, ContentType: "application/octet-stream"}}
	// A store that can take a finished file (S3) gets the verified spool
	// after the clients are served: they never wait for the upload, and a
	// fill holds no part buffers.
	putter, _ := c.store.(blob.FilePutter)
	if c.storeUsable() && putter != nil {
		t.putter = putter
	} else if c.storeUsable() {
		w, err := c.store.Create(ctx, blob.BlobKey(rt.Digest), t.want)
		if err != nil {
			c.storeFailed("create", err)
		} else {
			t.w = w
		}
	}
	if sp, ok := t.w.(blob.Spooler); ok {
		spool, err := sp.OpenSpool()
		if err == nil {
			t.spool = spool
			return t, nil
		}
		c.log.Warn("store writer cannot be read back; spooling separately", "err", err)
	}
	spool, err := os.CreateTemp(c.spoolDir, "fill-*")
	if err != nil {
		t.abort()
		return nil, fmt.Errorf("create spool: %w", err)
	}
	// Unlinked at once: the open descriptor keeps it readable, and nothing
	// is left behind if the process dies.
	_ = os.Remove(spool.Name())
	t.spool, t.ownSpool = spool, true
	if t.w == nil {
		t.own = blob.NewVerifier(t.want)
	}
	return t, nil
}

// write passes p to the store writer (or the transfer's own hash). A
// storage failure mid-transfer only ends the caching, unless the store's
// file is the spool the readers follow.
func (t *transfer) write(p []byte) error {
	if t.w != nil {
		if _, err := t.w.Write(p); err != nil {
			t.c.storeFailed("write", err)
			if !t.ownSpool {
				return fmt.Errorf("write spool: %w", err)
			}
			t.abort()
			if err := t.rehash(); err != nil {
				return err
			}
		}
	}
	if t.own != nil {
		_, _ = t.own.Write(p)
	}
	t.written += int64(len(p))
	return nil
}

// rehash takes over hashing from a store writer that failed, by hashing
// what the spool already holds.
func (t *transfer) rehash() error {
	t.own = blob.NewVerifier(t.want)
	buf := make([]byte, fillBufSize)
	for off := int64(0); off < t.written; {
		n, err := t.spool.ReadAt(buf[:min(int64(len(buf)), t.written-off)], off)
		_, _ = t.own.Write(buf[:n])
		off += int64(n)
		if err != nil && off < t.written {
			return fmt.Errorf("rehash spool: %w", err)
		}
	}
	return nil
}

func (t *transfer) verify() error {
	if t.w != nil {
		return t.w.Verify()
	}
	return t.own.Check()
}

// commit makes the verified blob visible; failing to do so costs only the
// caching, the clients already have verified bytes.
func (t *transfer) commit() {
	if t.putter != nil {
		want := t.want
		want.Size = t.written
		if err := t.putter.PutFile(t.ctx, blob.BlobKey(want.Digest), t.spool, want); err != nil {
			t.c.storeFailed("put file", err)
			return
		}
		t.c.storageOK()
		return
	}
	if t.w == nil {
		return
	}
	if err := t.w.Commit(t.ctx); err != nil {
		t.c.storeFailed("commit", err)
		return
	}
	t.c.storageOK()
}

func (t *transfer) abort() {
	if t.w != nil {
		_ = t.w.Abort(context.WithoutCancel(t.ctx))
		t.w = nil
	}
}
