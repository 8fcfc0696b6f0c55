// Package blobtest holds the conformance suite every blob.Store
// implementation runs (Run) and an in-memory Store for the unit tests of
// packages that sit on top of storage (Memory).
package blobtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
)

// Memory is an in-memory blob.Store with the same visible behaviour as the
// real stores: verified commits, key validation, ranged reads. The zero
// value is ready to use; it must not be copied after first use.
type Memory struct {
	mu   sync.Mutex
	objs map[string]memObject
}

type memObject struct {
	data []byte // never mutated once stored: readers share it
	info blob.Info
}

var _ blob.Store = (*Memory)(nil)

// NewMemory returns an empty Memory store.
func NewMemory() *Memory { return &Memory{} }

// Keys returns the stored keys in order (a test helper, not part of the
// Store interface).
func (m *Memory) Keys() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	keys := make([]string, 0, len(m.objs))
	for k := range m.objs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (m *Memory) get(op, key string) (memObject, error) {
	if !blob.ValidKey(key) {
		return memObject{}, fmt.Errorf("memory %s %q: %w", op, key, blob.ErrInvalidKey)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objs[key]
	if !ok {
		return memObject{}, fmt.Errorf("memory %s %s: %w", op, key, blob.ErrNotFound)
	}
	return o, nil
}

func (m *Memory) set(key string, data []byte, contentType string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.objs == nil {
		m.objs = make(map[string]memObject)
	}
	m.objs[key] = memObject{
		data: data,
		info: blob.Info{Size: int64(len(data)), ContentType: blob.ContentTypeOr(contentType), ModTime: time.Now()},
	}
}

// Stat implements blob.Store.
func (m *Memory) Stat(ctx context.Context, key string) (blob.Info, error) {
	if err := ctx.Err(); err != nil {
		return blob.Info{}, fmt.Errorf("memory stat %s: %w", key, err)
	}
	o, err := m.get("stat", key)
	return o.info, err
}

// Open implements blob.Store.
func (m *Memory) Open(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memory open %s: %w", key, err)
	}
	o, err := m.get("open", key)
	if err != nil {
		return nil, err
	}
	size := int64(len(o.data))
	if offset < 0 || offset > size {
		return nil, fmt.Errorf("memory open %s: offset %d outside object of %d bytes", key, offset, size)
	}
	end := size
	if length >= 0 && offset+length < size {
		end = offset + length
	}
	return io.NopCloser(bytes.NewReader(o.data[offset:end])), nil
}

// Create implements blob.Store.
func (m *Memory) Create(ctx context.Context, key string, want blob.Expect) (blob.Writer, error) {
	if !blob.ValidKey(key) {
		return nil, fmt.Errorf("memory create %q: %w", key, blob.ErrInvalidKey)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memory create %s: %w", key, err)
	}
	return &memWriter{m: m, ctx: ctx, key: key, want: want, v: blob.NewVerifier(want)}, nil
}

// Put implements blob.Store.
func (m *Memory) Put(ctx context.Context, key string, data []byte, contentType string) error {
	if !blob.ValidKey(key) {
		return fmt.Errorf("memory put %q: %w", key, blob.ErrInvalidKey)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory put %s: %w", key, err)
	}
	m.set(key, bytes.Clone(data), contentType)
	return nil
}

// Delete implements blob.Store.
func (m *Memory) Delete(ctx context.Context, key string) error {
	if !blob.ValidKey(key) {
		return fmt.Errorf("memory delete %q: %w", key, blob.ErrInvalidKey)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory delete %s: %w", key, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.objs, key)
	return nil
}

// List implements blob.Store. fn runs without the lock held, so it may call
// back into the store.
func (m *Memory) List(ctx context.Context, prefix string, fn func(key string, info blob.Info) error) error {
	if !blob.ValidPrefix(prefix) {
		return fmt.Errorf("memory list %q: %w", prefix, blob.ErrInvalidKey)
	}
	type entry struct {
		key  string
		info blob.Info
	}
	m.mu.Lock()
	var found []entry
	for k, o := range m.objs {
		if strings.HasPrefix(k, prefix) {
			info := o.info
			info.ContentType = "" // as the real stores: listings carry no type
			found = append(found, entry{k, info})
		}
	}
	m.mu.Unlock()
	sort.Slice(found, func(i, j int) bool { return found[i].key < found[j].key })
	for _, e := range found {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("memory list %s: %w", prefix, err)
		}
		if err := fn(e.key, e.info); err != nil {
			return err
		}
	}
	return nil
}

type memWriter struct {
	m     *Memory
	ctx   context.Context
	key   string
	want  blob.Expect
	v     *blob.Verifier
	buf   bytes.Buffer
	state blob.WriterState
}

func (w *memWriter) Write(p []byte) (int, error) {
	if w.state != blob.WriterOpen {
		return 0, fmt.Errorf("memory write %s: %w", w.key, blob.ErrWriterClosed)
	}
	if err := w.ctx.Err(); err != nil {
		return 0, fmt.Errorf("memory write %s: %w", w.key, err)
	}
	w.buf.Write(p)
	_, _ = w.v.Write(p)
	return len(p), nil
}

func (w *memWriter) Commit(ctx context.Context) error {
	switch w.state {
	case blob.WriterCommitted:
		return nil
	case blob.WriterClosed:
		return fmt.Errorf("memory commit %s: %w", w.key, blob.ErrWriterClosed)
	}
	w.state = blob.WriterClosed
	if err := errors.Join(ctx.Err(), w.ctx.Err()); err != nil {
		return fmt.Errorf("memory commit %s: %w", w.key, err)
	}
	if err := w.v.Check(); err != nil {
		return fmt.Errorf("memory commit %s: %w", w.key, err)
	}
	w.m.set(w.key, w.buf.Bytes(), w.want.ContentType)
	w.state = blob.WriterCommitted
	return nil
}

func (w *memWriter) Abort(context.Context) error {
	if w.state == blob.WriterOpen {
		w.state = blob.WriterClosed
		w.buf = bytes.Buffer{}
	}
	return nil
}

// Verify implements blob.Writer.
func (w *memWriter) Verify() error { return w.v.Check() }
