package fs

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
)

// writer writes to a temporary file in _uploads; Commit renames it into
// place after verification.
type writer struct {
	s          *Store
	ctx        context.Context
	key        string
	path, meta string
	want       blob.Expect
	f          *os.File
	v          *blob.Verifier
	state      blob.WriterState
}

// Create implements blob.Store.
func (s *Store) Create(ctx context.Context, key string, want blob.Expect) (blob.Writer, error) {
	path, meta, err := s.paths("create", key)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("fs create %s: %w", key, err)
	}
	f, err := os.CreateTemp(s.uploads, "blob-*")
	if err != nil {
		return nil, fmt.Errorf("fs create %s: %w", key, err)
	}
	return &writer{s: s, ctx: ctx, key: key, path: path, meta: meta, want: want, f: f, v: blob.NewVerifier(want)}, nil
}

func (w *writer) Write(p []byte) (int, error) {
	if w.state != blob.WriterOpen {
		return 0, fmt.Errorf("fs write %s: %w", w.key, blob.ErrWriterClosed)
	}
	if err := w.ctx.Err(); err != nil {
		return 0, fmt.Errorf("fs write %s: %w", w.key, err)
	}
	n, err := w.f.Write(p)
	_, _ = w.v.Write(p[:n])
	if err != nil {
		return n, fmt.Errorf("fs write %s: %w", w.key, err)
	}
	return n, nil
}

// Commit verifies, syncs and renames. The sync comes before the rename so
// that after a crash a visible file is never a partly written one.
func (w *writer) Commit(ctx context.Context) error {
	switch w.state {
	case blob.WriterCommitted:
		return nil
	case blob.WriterClosed:
		return fmt.Errorf("fs commit %s: %w", w.key, blob.ErrWriterClosed)
	}
	err := errors.Join(ctx.Err(), w.ctx.Err())
	if err == nil {
		err = w.v.Check()
	}
	if err == nil {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = w.s.place(w.f.Name(), w.path, w.meta, w.want.ContentType)
	}
	if err != nil {
		w.state = blob.WriterClosed
		os.Remove(w.f.Name())
		return fmt.Errorf("fs commit %s: %w", w.key, err)
	}
	w.state = blob.WriterCommitted
	return nil
}

// Abort implements blob.Writer.
func (w *writer) Abort(context.Context) error {
	if w.state != blob.WriterOpen {
		return nil
	}
	w.state = blob.WriterClosed
	_ = w.f.Close() // the data is being thrown away; removing it is what matters
	if err := os.Remove(w.f.Name()); err != nil && !isNotExist(err) {
		return fmt.Errorf("fs abort %s: %w", w.key, err)
	}
	return nil
}

// Verify implements blob.Writer.
func (w *writer) Verify() error { return w.v.Check() }

// OpenSpool implements blob.Spooler: a second descriptor on the temporary
// file, which survives the rename at Commit and the unlink at Abort.
func (w *writer) OpenSpool() (*os.File, error) {
	f, err := os.Open(w.f.Name())
	if err != nil {
		return nil, fmt.Errorf("fs spool %s: %w", w.key, err)
	}
	return f, nil
}
