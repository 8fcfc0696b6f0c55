package registry

import (
	"io"
	"os"
	"sync"
)

// copyBufSize is the unit of copies from readers that cannot hand their
// bytes to the socket themselves (S3 bodies, fills being followed): large
// enough that the per-syscall cost disappears at loopback speed, where
// net/http's own 32 KiB copy halves the throughput.
const copyBufSize = 256 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// writerOnly hides the ResponseWriter's ReadFrom so io.CopyBuffer uses our
// buffer instead of net/http's small one.
type writerOnly struct{ io.Writer }

// copyBody sends rc to w the fastest way each kind of reader allows: files
// and readers that write themselves (sendfile), else a large buffer.
func copyBody(w io.Writer, rc io.Reader) (int64, error) {
	switch r := rc.(type) {
	case *os.File:
		return io.Copy(w, r)
	case io.WriterTo:
		return r.WriteTo(w)
	}
	bufp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bufp)
	return io.CopyBuffer(writerOnly{w}, rc, *bufp)
}
