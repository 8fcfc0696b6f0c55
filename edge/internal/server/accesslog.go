package server

import (
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/metrics"
)

// statusWriter records the status and size of a response. It forwards
// ReadFrom so that blobs served from files still go out with sendfile.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(w.ResponseWriter, r)
	}
	w.bytes += n
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// withAccessLog logs one structured line per request and counts it. It logs
// the path and never headers: Authorization must not reach the logs.
func withAccessLog(next http.Handler, m *metrics.Metrics, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		kind := endpointKind(r.URL.Path)
		defer func() {
			rec := recover()
			status := sw.status
			if status == 0 {
				status = http.StatusOK // net/http's implicit status (HEAD answers write no body)
			}
			if rec != nil {
				status = 499 // aborted mid-body
			}
			dur := time.Since(start)
			m.Requests.WithLabelValues(r.Method, kind, strconv.Itoa(status)).Inc()
			m.RequestDuration.WithLabelValues(kind).Observe(dur.Seconds())
			log.Info("request", "method", r.Method, "path", r.URL.Path, "status", status,
				"bytes", sw.bytes, "duration_ms", dur.Milliseconds(), "remote", r.RemoteAddr,
				"cache", sw.Header().Get("X-Cache"))
			if rec != nil {
				panic(rec)
			}
		}()
		next.ServeHTTP(sw, r)
	})
}

func endpointKind(path string) string {
	switch {
	case strings.Contains(path, "/blobs/"):
		return "blob"
	case strings.Contains(path, "/manifests/"):
		return "manifest"
	case strings.HasSuffix(path, "/tags/list"):
		return "tags"
	}
	return "other"
}
