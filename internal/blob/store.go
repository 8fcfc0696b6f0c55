// Package blob defines the storage boundary of the edge's cache (shared
// with the control plane): a small object store whose writes become visible
// only after their digest and size are verified. Implementations live in
// sub-packages (fs, s3) and all pass the conformance suite in blobtest.
package blob

import (
	"context"
	"errors"
	"io"
	"os"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
)

// Sentinel errors. Implementations wrap them with %w.
var (
	// ErrNotFound means no object is stored at the key.
	ErrNotFound = errors.New("object not found")
	// ErrVerify means a write's content did not match what was expected of
	// it (digest or size); nothing was made visible.
	ErrVerify = errors.New("content verification failed")
	// ErrInvalidKey means a key is not one the layout produces.
	ErrInvalidKey = errors.New("invalid storage key")
	// ErrWriterClosed means a Writer was used after Commit or Abort.
	ErrWriterClosed = errors.New("writer already committed or aborted")
)

// Info describes a stored object.
type Info struct {
	Size int64
	// ContentType is the type given when the object was written, or
	// DefaultContentType when none was given (so every store reports the
	// same, whatever its server's own default is).
	ContentType string
	ModTime     time.Time
}

// DefaultContentType is the type of an object written without one.
const DefaultContentType = "application/octet-stream"

// ContentTypeOr returns contentType, or DefaultContentType when it is empty.
func ContentTypeOr(contentType string) string {
	if contentType == "" {
		return DefaultContentType
	}
	return contentType
}

// Expect is what a verified write must turn out to be.
type Expect struct {
	Digest oci.Digest
	// Size is the expected length in bytes, or -1 when only the digest is
	// known in advance.
	Size        int64
	ContentType string
}

// Store is the storage boundary of the edge.
type Store interface {
	// Stat returns the object's Info, or an error wrapping ErrNotFound.
	Stat(ctx context.Context, key string) (Info, error)
	// Open returns the bytes [offset, offset+length) of the object; a
	// negative length means to the end.
	Open(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
	// Create starts a verified write to key. Nothing is visible at key until
	// Commit has checked the digest and size of everything written.
	Create(ctx context.Context, key string, want Expect) (Writer, error)
	// Put atomically replaces the small mutable object at key (tag records).
	Put(ctx context.Context, key string, data []byte, contentType string) error
	// Delete removes the object at key; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// List calls fn for every committed object whose key starts with prefix
	// (a plain string prefix, see ValidPrefix), in no guaranteed order. The
	// Info carries Size and ModTime; ContentType is left empty because an S3
	// listing does not return it (Stat the key when it is needed). An error
	// returned by fn stops the listing and is returned.
	List(ctx context.Context, prefix string, fn func(key string, info Info) error) error
}

// Writer is an in-progress verified write. It is not safe for concurrent use.
// Its lifetime is bound to the context given to Create: once that is
// cancelled, Write fails. After any error the caller still calls Abort
// (typically deferred), which releases whatever the write held.
type Writer interface {
	io.Writer
	// Verify checks what was written so far against the Expect given to
	// Create, without committing: a fill can release verified bytes to its
	// clients before the (slower) Commit makes them durable. It returns an
	// error wrapping ErrVerify on a mismatch.
	Verify() error
	// Commit verifies what was written against the Expect given to Create
	// and makes it visible; on a mismatch it discards the data and returns
	// an error wrapping ErrVerify. A failed Commit discards the data too.
	// Commit after a successful Commit is a no-op.
	Commit(ctx context.Context) error
	// Abort discards the data. It is safe to call after Commit (no-op).
	Abort(ctx context.Context) error
}

// Spooler is implemented by Writers whose bytes can be read back before
// Commit, such as the filesystem store's temporary file. A blob fill then
// serves its concurrent readers from that file instead of writing a second
// copy of every cold blob.
type Spooler interface {
	// OpenSpool returns a new read-only handle on the file being written. It
	// stays readable after Commit or Abort; the caller closes it.
	OpenSpool() (*os.File, error)
}

// FilePutter is implemented by stores that store a complete local file more
// cheaply than through a streaming Writer (S3: parallel multipart parts read
// straight from the file, no part buffers in memory). The caller has
// verified src against want (digest and size) before calling: the fill
// hashes every byte once while it streams.
type FilePutter interface {
	PutFile(ctx context.Context, key string, src io.ReaderAt, want Expect) error
}

// WriterState is the lifecycle every Writer implementation follows:
// open until Commit or Abort, then committed or closed for good.
type WriterState int

// Writer lifecycle states.
const (
	WriterOpen WriterState = iota
	WriterCommitted
	WriterClosed // aborted, or a failed Commit
)

// PresigningStore is a Store that can let anyone holding a URL read one
// object without credentials of their own, for a while (S3 presigned GETs).
// The control plane hands such URLs to edges, one checked object at a time.
type PresigningStore interface {
	Store
	// Presign returns a URL for GET (Range allowed) of key and when it
	// stops working. The URL is a secret while valid: never log it.
	Presign(ctx context.Context, key string, ttl time.Duration) (string, time.Time, error)
}
