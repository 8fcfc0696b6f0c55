package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// errFillAborted is what followers of a fill see when it failed before they
// could read everything; the underlying cause is logged once by the fill.
var errFillAborted = errors.New("upstream transfer aborted")

// fill is one upstream blob transfer shared by every request for the blob
// while it runs. The transfer is written to a spool file; each request reads
// the spool at its own offset and follows the writer. The last byte is held
// back until the digest is verified, so no client ever receives a complete
// body that turns out to be wrong: a bad transfer ends as a broken one.
type fill struct {
	key   string
	ready chan struct{} // closed once size (or err) is known

	mu       sync.Mutex
	size     int64 // -1 when the upstream sent no length
	written  int64
	done     bool
	err      error
	notify   chan struct{} // closed and replaced on every change
	spool    *os.File
	ownSpool bool
	refs     int
}

func newFill(key string) *fill {
	return &fill{key: key, ready: make(chan struct{}), notify: make(chan struct{}), size: -1, refs: 1}
}

// start records the blob size and the spool; readers may begin. With
// ownSpool the fill writes the spool itself; otherwise the spool is a
// read handle on a file the store's writer fills.
func (f *fill) start(size int64, spool *os.File, ownSpool bool) {
	f.mu.Lock()
	f.size, f.spool, f.ownSpool = size, spool, ownSpool
	f.mu.Unlock()
	close(f.ready)
}

// append records that p was written (writing it to the spool when the
// spool is the fill's own) and wakes readers.
func (f *fill) append(p []byte) error {
	if f.ownSpool {
		if _, err := f.spool.WriteAt(p, f.written); err != nil {
			return fmt.Errorf("write spool: %w", err)
		}
	}
	f.mu.Lock()
	f.written += int64(len(p))
	f.wakeLocked()
	f.mu.Unlock()
	return nil
}

// finish ends the transfer; err == nil means every byte is verified.
func (f *fill) finish(err error) {
	f.mu.Lock()
	f.done, f.err = true, err
	f.wakeLocked()
	f.mu.Unlock()
	select {
	case <-f.ready:
	default:
		close(f.ready) // failed before start
	}
}

func (f *fill) wakeLocked() {
	close(f.notify)
	f.notify = make(chan struct{})
}

// acquire adds a reference that keeps the spool open.
func (f *fill) acquire() { f.mu.Lock(); f.refs++; f.mu.Unlock() }

// release drops a reference; the last one closes the (already unlinked)
// spool file.
func (f *fill) release() {
	f.mu.Lock()
	f.refs--
	last := f.refs == 0
	spool := f.spool
	f.mu.Unlock()
	if last && spool != nil {
		_ = spool.Close()
	}
}

// wait blocks until the size is known and returns the size or the error.
func (f *fill) wait(ctx context.Context) (int64, error) {
	select {
	case <-f.ready:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.spool == nil {
		return 0, f.err
	}
	return f.size, nil
}

// reader returns a reader of [off, off+n) of the blob (n < 0: to the end).
func (f *fill) reader(ctx context.Context, off, n int64) io.ReadCloser {
	f.acquire()
	end := int64(-1)
	if n >= 0 {
		end = off + n
	}
	return &fillReader{ctx: ctx, f: f, off: off, end: end}
}

type fillReader struct {
	ctx    context.Context
	f      *fill
	off    int64
	end    int64 // -1: to the end of the blob
	closed bool
}

func (r *fillReader) Read(p []byte) (int, error) {
	for {
		if r.end >= 0 && r.off >= r.end {
			return 0, io.EOF
		}
		r.f.mu.Lock()
		avail, size, done, err, notify := r.f.written, r.f.size, r.f.done, r.f.err, r.f.notify
		r.f.mu.Unlock()
		if done && err != nil {
			return 0, errFillAborted
		}
		if !done {
			// Hold the blob's last byte back until it is verified. With an
			// unknown size any byte may be the last one.
			if size < 0 {
				avail--
			} else if avail > size-1 {
				avail = size - 1
			}
		}
		if r.end >= 0 && avail > r.end {
			avail = r.end
		}
		if r.off < avail {
			if int64(len(p)) > avail-r.off {
				p = p[:avail-r.off]
			}
			n, rerr := r.f.spool.ReadAt(p, r.off)
			r.off += int64(n)
			if n > 0 {
				return n, nil
			}
			if rerr != nil && rerr != io.EOF {
				return 0, fmt.Errorf("read spool: %w", rerr)
			}
			continue
		}
		if done {
			return 0, io.EOF
		}
		select {
		case <-notify:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
}

func (r *fillReader) Close() error {
	if !r.closed {
		r.closed = true
		r.f.release()
	}
	return nil
}

// fillSet tracks the fills in flight by storage key. It is an instance
// field of the Cache, not package state, so caches never share fills.
type fillSet struct {
	mu sync.Mutex
	m  map[string]*fill
}

// join returns the running fill for key with a reference taken, or creates
// it; leader says whether the caller must run it.
func (s *fillSet) join(key string) (f *fill, leader bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]*fill{}
	}
	if f, ok := s.m[key]; ok {
		f.acquire()
		return f, false
	}
	f = newFill(key)
	f.refs++ // one for the caller, one for the running transfer
	s.m[key] = f
	return f, true
}

func (s *fillSet) remove(f *fill) {
	s.mu.Lock()
	if s.m[f.key] == f {
		delete(s.m, f.key)
	}
	s.mu.Unlock()
}

// fillWaiter counts the fills running in the background, so that a
// shutdown can wait for them.
type fillWaiter struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to zero
}

func (w *fillWaiter) add() {
	w.mu.Lock()
	if w.n == 0 {
		w.idle = make(chan struct{})
	}
	w.n++
	w.mu.Unlock()
}

func (w *fillWaiter) done() {
	w.mu.Lock()
	w.n--
	if w.n == 0 {
		close(w.idle)
	}
	w.mu.Unlock()
}

// WaitFills waits until every blob fill running in the background has
// committed or aborted, or ctx ends. The edge calls it on shutdown after
// its last request: the clients of a fill get the last byte once it is
// verified, before the store's commit, and the commit must not be lost.
func (c *Cache) WaitFills(ctx context.Context) error {
	c.running.mu.Lock()
	if c.running.n == 0 {
		c.running.mu.Unlock()
		return nil
	}
	idle := c.running.idle
	c.running.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for blob fills: %w", ctx.Err())
	}
}
