// Package calllimit bounds the gRPC streams each caller holds open at
// once. The connection cap and the per-connection stream limit bound what
// one connection can hold, but not what a caller with many connections
// can: 1024 connections of 64 health streams each would hold ~65 000
// streams (~12 KiB each, far beyond the control plane's memory limit).
// Streams are counted per authenticated identity (an edge's namespace, an
// admin) and, for calls without one (health), in one shared anonymous
// pool, so one tenant or one anonymous flood cannot crowd out the rest.
package calllimit

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/auth"
)

// Anonymous is the key of the streams of callers without an identity.
const Anonymous = "anonymous"

// Limiter counts the open streams of each caller.
type Limiter struct {
	max     int
	refused func()

	mu   sync.Mutex
	open map[string]int
}

// New returns a Limiter allowing limit open streams per caller (at least 1).
// refused, when not nil, is called for each stream refused (a metric).
func New(limit int, refused func()) *Limiter {
	return &Limiter{max: max(limit, 1), refused: refused, open: map[string]int{}}
}

// Key is the caller a stream is counted against.
func Key(ctx context.Context) string {
	if id, ok := auth.FromContext(ctx); ok {
		return id.Kind.String() + ":" + id.Name
	}
	return Anonymous
}

// acquire counts a stream for key, or reports false at the limit.
func (l *Limiter) acquire(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[key] >= l.max {
		return false
	}
	l.open[key]++
	return true
}

func (l *Limiter) release(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[key]--; l.open[key] <= 0 {
		delete(l.open, key)
	}
}

// Open is the number of streams key holds.
func (l *Limiter) Open(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open[key]
}

// StreamInterceptor refuses a stream with ResourceExhausted when its
// caller holds the maximum already. It must run after the authentication
// interceptor, whose identity it reads.
func (l *Limiter) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		key := Key(ss.Context())
		if !l.acquire(key) {
			if l.refused != nil {
				l.refused()
			}
			return status.Errorf(codes.ResourceExhausted, "this caller has %d streams open, the most allowed; close one and retry", l.max)
		}
		defer l.release(key)
		return handler(srv, ss)
	}
}
