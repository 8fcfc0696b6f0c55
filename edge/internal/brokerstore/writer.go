package brokerstore

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

type putStream = grpc.ClientStreamingClient[selfhostv1.PutObjectRequest, selfhostv1.PutObjectResponse]

// writer streams a verified write to PutObject. It hashes what it is given
// itself, so Verify answers before Commit (the fill releases verified bytes
// to its clients before the commit), and a write that does not verify is
// never sent to the broker to be refused there.
type writer struct {
	s      *Store
	ctx    context.Context // the stream's; cancelled by Abort
	cancel context.CancelFunc
	key    string
	stream putStream
	v      *blob.Verifier
	buf    []byte // the next data message; handed to gRPC when full
	err    error  // sticky: the stream failed
	state  blob.WriterState
}

// Create implements blob.Store. The header goes out at once; the broker
// refuses (blob.ErrDenied) on it, seen by the next Write or Commit.
func (s *Store) Create(ctx context.Context, key string, want blob.Expect) (blob.Writer, error) {
	scope, err := scopeFor(ctx, "create", key)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("broker create %s: %w", key, err)
	}
	wctx, cancel := context.WithCancel(ctx)
	stream, err := s.client.PutObject(wctx)
	if err != nil {
		cancel()
		return nil, rpcErr(ctx, "create", key, err)
	}
	w := &writer{s: s, ctx: wctx, cancel: cancel, key: key, stream: stream, v: blob.NewVerifier(want)}
	hdr := &selfhostv1.PutObjectHeader{Key: key, Scope: scope, Digest: want.Digest.String(), Size: want.Size, ContentType: want.ContentType}
	if err := w.send(&selfhostv1.PutObjectRequest{Part: &selfhostv1.PutObjectRequest_Header{Header: hdr}}); err != nil {
		cancel()
		return nil, err
	}
	return w, nil
}

// send sends one message; when the broker has ended the stream, its status
// is the error.
func (w *writer) send(m *selfhostv1.PutObjectRequest) error {
	if w.err != nil {
		return w.err
	}
	err := w.stream.Send(m)
	if errors.Is(err, io.EOF) {
		_, err = w.stream.CloseAndRecv()
		if err == nil {
			err = errors.New("the broker ended the upload early")
		}
	}
	if err != nil {
		w.err = rpcErr(w.ctx, "write", w.key, err)
	}
	return w.err
}

// Write implements blob.Writer. p is copied: gRPC may still hold a message
// after Send returns, and the caller reuses its buffer.
func (w *writer) Write(p []byte) (int, error) {
	if w.state != blob.WriterOpen {
		return 0, fmt.Errorf("broker write %s: %w", w.key, blob.ErrWriterClosed)
	}
	if err := w.ctx.Err(); err != nil {
		return 0, fmt.Errorf("broker write %s: %w", w.key, err)
	}
	if w.err != nil {
		return 0, w.err
	}
	_, _ = w.v.Write(p)
	for rest := p; len(rest) > 0; {
		if w.buf == nil {
			w.buf = make([]byte, 0, chunkSize)
		}
		n := min(len(rest), chunkSize-len(w.buf))
		w.buf = append(w.buf, rest[:n]...)
		rest = rest[n:]
		if len(w.buf) == chunkSize {
			if err := w.flush(); err != nil {
				return len(p) - len(rest), err
			}
		}
	}
	return len(p), nil
}

// flush sends the buffered bytes as one data message.
func (w *writer) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	data := w.buf
	w.buf = nil
	return w.send(&selfhostv1.PutObjectRequest{Part: &selfhostv1.PutObjectRequest_Data{Data: data}})
}

// Verify implements blob.Writer.
func (w *writer) Verify() error { return w.v.Check() }

// Commit implements blob.Writer: the broker verifies again and stores.
func (w *writer) Commit(ctx context.Context) error {
	switch w.state {
	case blob.WriterCommitted:
		return nil
	case blob.WriterClosed:
		return fmt.Errorf("broker commit %s: %w", w.key, blob.ErrWriterClosed)
	}
	err := errors.Join(ctx.Err(), w.ctx.Err())
	if err == nil {
		err = w.v.Check()
	}
	if err == nil {
		err = w.flush()
	}
	if err == nil {
		// Commit's own context bounds the wait for the broker's answer.
		stop := context.AfterFunc(ctx, w.cancel)
		_, err = w.stream.CloseAndRecv()
		stop()
		if err != nil {
			err = rpcErr(ctx, "commit", w.key, err)
		}
	}
	w.cancel()
	if err != nil {
		w.state = blob.WriterClosed
		return fmt.Errorf("broker commit %s: %w", w.key, err)
	}
	w.state = blob.WriterCommitted
	w.s.grants.drop(w.key)
	return nil
}

// Abort implements blob.Writer: cancelling the stream makes the broker
// discard what it received.
func (w *writer) Abort(context.Context) error {
	if w.state != blob.WriterOpen {
		return nil
	}
	w.state = blob.WriterClosed
	w.cancel()
	return nil
}
