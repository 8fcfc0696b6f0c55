package registry

import (
	"io"
	"os"
	"sync"
)

// Copy buffers for readers that cannot hand their bytes to the socket
// themselves. Large units make the per-syscall cost disappear at loopback
// speed (net/http's own 32 KiB copy halves the throughput): 1 MiB for
// stored bodies (S3), where it was measured to matter, and 256 KiB for
// followers of a cold fill, of which a popular blob can have a hundred at
// once (1 MiB each put the edge at ~126 MiB; 256 KiB at ~50 MiB, same time).
var (
	storedBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}
	fillBufs   = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}
)

// writerOnly hides the ResponseWriter's ReadFrom so io.CopyBuffer uses our
// buffer instead of net/http's small one.
type writerOnly struct{ io.Writer }

// copyBody sends rc to w the fastest way each kind of reader allows: files
// and readers that write themselves (sendfile), else a large buffer.
func copyBody(w io.Writer, rc io.Reader, stored bool) (int64, error) {
	switch r := rc.(type) {
	case *os.File:
		return io.Copy(w, r)
	case io.WriterTo:
		return r.WriteTo(w)
	}
	pool := &fillBufs
	if stored {
		pool = &storedBufs
	}
	bufp := pool.Get().(*[]byte)
	defer pool.Put(bufp)
	return io.CopyBuffer(writerOnly{w}, rc, *bufp)
}
