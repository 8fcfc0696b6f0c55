package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
)

// writer buffers one part while at most one earlier part uploads in the
// background, so a writer holds at most two parts of memory and a slow
// upload slows the producer down instead of piling up buffers.
//
// The multipart upload is created only when a second part is needed: an
// object that fits in one part is put with a single PutObject at Commit.
type writer struct {
	s      *Store
	ctx    context.Context // from Create; cancelled by Abort
	cancel context.CancelFunc
	key    string
	obj    string
	want   blob.Expect
	v      *blob.Verifier

	buf      *[]byte // the part being filled
	uploadID string
	parts    []types.CompletedPart
	pending  chan partResult // the part in flight, or nil
	err      error           // sticky: the first failure of a part upload
	state    blob.WriterState
}

type partResult struct {
	part types.CompletedPart
	err  error
}

// Create implements blob.Store.
func (s *Store) Create(ctx context.Context, key string, want blob.Expect) (blob.Writer, error) {
	obj, err := s.object("create", key)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("s3 create %s: %w", key, err)
	}
	wctx, cancel := context.WithCancel(ctx)
	return &writer{
		s: s, ctx: wctx, cancel: cancel, key: key, obj: obj, want: want,
		v: blob.NewVerifier(want), buf: s.getBuf(),
	}, nil
}

func (w *writer) Write(p []byte) (int, error) {
	if w.state != blob.WriterOpen {
		return 0, fmt.Errorf("s3 write %s: %w", w.key, blob.ErrWriterClosed)
	}
	if err := w.ctx.Err(); err != nil {
		return 0, fmt.Errorf("s3 write %s: %w", w.key, err)
	}
	if w.err != nil {
		return 0, w.err
	}
	written := 0
	for len(p) > 0 {
		b := *w.buf
		if len(b) == cap(b) {
			// Full, and more is coming: this is not the last part.
			if err := w.flush(); err != nil {
				w.err = err
				return written, err
			}
			b = *w.buf
		}
		n := copy(b[len(b):cap(b)], p)
		*w.buf = b[:len(b)+n]
		_, _ = w.v.Write(p[:n])
		p = p[n:]
		written += n
	}
	return written, nil
}

// flush starts the upload of the full buffer as the next part, after the
// previous part has finished.
func (w *writer) flush() error {
	if err := w.wait(); err != nil {
		return err
	}
	if w.uploadID == "" {
		out, err := w.s.client.CreateMultipartUpload(w.ctx, &awss3.CreateMultipartUploadInput{
			Bucket:      &w.s.bucket,
			Key:         &w.obj,
			ContentType: aws.String(blob.ContentTypeOr(w.want.ContentType)),
		})
		if err != nil {
			return wrap("create upload", w.key, err)
		}
		w.uploadID = aws.ToString(out.UploadId)
	}
	buf, num := w.buf, int32(len(w.parts)+1)
	w.buf = w.s.getBuf()
	ch := make(chan partResult, 1)
	w.pending = ch
	go func() {
		part, err := w.uploadPart(w.ctx, num, *buf)
		if err == nil {
			// Only on success: after a failed request the HTTP transport
			// may still be reading the body, so the buffer is left to GC.
			w.s.putBuf(buf)
		}
		ch <- partResult{part, err}
	}()
	return nil
}

func (w *writer) uploadPart(ctx context.Context, num int32, data []byte) (types.CompletedPart, error) {
	out, err := w.s.client.UploadPart(ctx, &awss3.UploadPartInput{
		Bucket:        &w.s.bucket,
		Key:           &w.obj,
		UploadId:      &w.uploadID,
		PartNumber:    aws.Int32(num),
		Body:          bytes.NewReader(data),
		ContentLength: aws.Int64(int64(len(data))),
	})
	if err != nil {
		return types.CompletedPart{}, wrap(fmt.Sprintf("upload part %d", num), w.key, err)
	}
	return types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num)}, nil
}

// wait collects the part in flight, if any.
func (w *writer) wait() error {
	if w.pending == nil {
		return nil
	}
	r := <-w.pending
	w.pending = nil
	if r.err != nil {
		return r.err
	}
	w.parts = append(w.parts, r.part)
	return nil
}

// Commit verifies everything written and only then makes it visible:
// PutObject for a single part, otherwise the last part and
// CompleteMultipartUpload. Any failure aborts the upload.
func (w *writer) Commit(ctx context.Context) error {
	switch w.state {
	case blob.WriterCommitted:
		return nil
	case blob.WriterClosed:
		return fmt.Errorf("s3 commit %s: %w", w.key, blob.ErrWriterClosed)
	}
	if err := w.commit(ctx); err != nil {
		_ = w.discard(ctx) // the commit error is the one that matters
		return err
	}
	w.state = blob.WriterCommitted
	w.cancel()
	return nil
}

func (w *writer) commit(ctx context.Context) error {
	if w.err != nil {
		return w.err
	}
	if err := errors.Join(ctx.Err(), w.ctx.Err()); err != nil {
		return fmt.Errorf("s3 commit %s: %w", w.key, err)
	}
	if err := w.v.Check(); err != nil {
		return fmt.Errorf("s3 commit %s: %w", w.key, err)
	}
	// From here the buffer is handed to the SDK and, as in flush, goes back
	// to the pool only after a successful request.
	if w.uploadID == "" {
		buf := w.buf
		w.buf = nil
		if err := w.s.putObject(ctx, w.obj, *buf, w.want.ContentType); err != nil {
			return wrap("commit", w.key, err)
		}
		w.s.putBuf(buf)
		return nil
	}
	if err := w.wait(); err != nil {
		return err
	}
	if buf := w.buf; len(*buf) > 0 {
		w.buf = nil
		part, err := w.uploadPart(ctx, int32(len(w.parts)+1), *buf)
		if err != nil {
			return err
		}
		w.parts = append(w.parts, part)
		w.s.putBuf(buf)
	}
	_, err := w.s.client.CompleteMultipartUpload(ctx, &awss3.CompleteMultipartUploadInput{
		Bucket:          &w.s.bucket,
		Key:             &w.obj,
		UploadId:        &w.uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: w.parts},
	})
	if err != nil {
		return wrap("commit", w.key, err)
	}
	return nil
}

// Abort implements blob.Writer.
func (w *writer) Abort(ctx context.Context) error {
	if w.state != blob.WriterOpen {
		return nil
	}
	return w.discard(ctx)
}

// discard stops the part in flight, aborts the multipart upload and frees
// the buffer. The abort runs even when ctx is already cancelled: a writer
// is usually discarded because its request went away, and an upload left
// behind would be stored (and billed) until a lifecycle rule removes it.
func (w *writer) discard(ctx context.Context) error {
	w.state = blob.WriterClosed
	w.cancel()
	_ = w.wait()
	if w.buf != nil {
		w.s.putBuf(w.buf)
		w.buf = nil
	}
	if w.uploadID == "" {
		return nil
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	_, err := w.s.client.AbortMultipartUpload(actx, &awss3.AbortMultipartUploadInput{
		Bucket: &w.s.bucket, Key: &w.obj, UploadId: &w.uploadID,
	})
	if err != nil && !isNoSuchUpload(err) {
		return wrap("abort", w.key, err)
	}
	return nil
}

// Verify implements blob.Writer.
func (w *writer) Verify() error { return w.v.Check() }
