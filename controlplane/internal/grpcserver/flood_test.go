package grpcserver_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/grpcserver"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/grpcserver/servertest"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/metrics"
)

// floodConn is one raw HTTP/2 connection that opens health Watch streams
// without waiting for the server's stream limit, as a hostile client
// would (a gRPC client would queue them itself).
type floodConn struct {
	conn net.Conn
	fr   *http2.Framer
	dec  *hpack.Decoder // the server's header blocks, in order
}

// floodResult is what the server did with the streams of one connection.
type floodResult struct {
	closed    bool // the server closed the connection before any frame
	answered  int  // streams the server holds open (response headers)
	exhausted int  // streams ended at once with ResourceExhausted
	refused   int  // streams reset with REFUSED_STREAM
}

func dialFlood(t *testing.T, addr string) *floodConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	// Write errors are expected once the server closed a connection over
	// the cap; read tells.
	_, _ = io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	_ = fr.WriteSettings()
	return &floodConn{conn: c, fr: fr, dec: hpack.NewDecoder(4096, nil)}
}

// open sends n Watch calls on streams 1, 3, 5, …
func (f *floodConn) open(n int) error {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, hf := range []hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: "/grpc.health.v1.Health/Watch"}, {Name: ":authority", Value: "controlplane"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
	} {
		if err := enc.WriteField(hf); err != nil {
			return err
		}
	}
	// An empty HealthCheckRequest: uncompressed, length 0.
	msg := []byte{0, 0, 0, 0, 0}
	for i := range n {
		id := uint32(2*i + 1)
		if err := f.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
			return err
		}
		if err := f.fr.WriteData(id, true, msg); err != nil {
			return err
		}
	}
	return nil
}

// read counts the server's answers until every one of n streams has one
// (headers or a reset) or the connection ends.
func (f *floodConn) read(n int) floodResult {
	var r floodResult
	seen := map[uint32]bool{}
	frames := 0
	for len(seen) < n {
		_ = f.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		fr, err := f.fr.ReadFrame()
		if err != nil {
			r.closed = frames == 0
			return r
		}
		frames++
		switch fr := fr.(type) {
		case *http2.SettingsFrame:
			if !fr.IsAck() {
				_ = f.fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !fr.IsAck() {
				_ = f.fr.WritePing(true, fr.Data)
			}
		case *http2.HeadersFrame:
			fields, err := f.dec.DecodeFull(fr.HeaderBlockFragment())
			if err != nil || seen[fr.StreamID] {
				continue
			}
			seen[fr.StreamID] = true
			status := ""
			for _, hf := range fields {
				if hf.Name == "grpc-status" {
					status = hf.Value
				}
			}
			switch {
			case !fr.StreamEnded():
				r.answered++
			case status == strconv.Itoa(int(codes.ResourceExhausted)):
				r.exhausted++
			}
		case *http2.RSTStreamFrame:
			if !seen[fr.StreamID] && fr.ErrCode == http2.ErrCodeRefusedStream {
				seen[fr.StreamID] = true
				r.refused++
			}
		}
	}
	return r
}

// liveBytes is the heap and the goroutine stacks in use after a GC.
func liveBytes() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}

// TestFloodOfAnonymousStreams reproduces the probe that took a control
// plane from 75 to 549 MiB: many unauthenticated connections, each with
// many health streams. Connections over the cap are closed at once,
// streams over the per-connection limit are refused, streams over the
// anonymous callers' shared limit end with ResourceExhausted, and the
// memory the flood costs stays small.
func TestFloodOfAnonymousStreams(t *testing.T) {
	const (
		maxConns   = 8
		maxStreams = 16
		maxCaller  = 100 // < maxConns*maxStreams
		conns      = 20
		perConn    = 500
	)
	m := metrics.New()
	env := servertest.Start(t, servertest.Options{Listen: "127.0.0.1:0", Server: func(o *grpcserver.Options) {
		o.MaxConnections = maxConns
		o.MaxConcurrentStreams = maxStreams
		o.MaxStreamsPerCaller = maxCaller
		o.Metrics = m
	}})
	before := liveBytes()

	// Connections one at a time, so which ones get a slot is certain.
	var flood []*floodConn
	results := make([]floodResult, conns)
	var wg sync.WaitGroup
	for i := range conns {
		f := dialFlood(t, env.Addr)
		flood = append(flood, f)
		if err := f.open(perConn); err != nil && i < maxConns {
			t.Fatalf("connection %d: write: %v", i, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = f.read(perConn)
		}()
		if i < maxConns {
			// Wait until the server holds this connection's streams
			// before the next connection competes for a slot.
			wg.Wait()
		}
	}
	wg.Wait()
	grown := int64(liveBytes()) - int64(before)

	var open, closed, held, exhausted int
	for i, r := range results {
		switch {
		case r.closed:
			closed++
			continue
		case r.answered+r.exhausted+r.refused != perConn || r.answered > maxStreams || r.refused == 0:
			// An exhausted stream frees its slot at once, so how many
			// more of the burst the connection admits varies; what it
			// holds never exceeds its limit.
			t.Errorf("connection %d: %d streams held, %d exhausted, %d refused; want all %d answered, at most %d held, some refused",
				i, r.answered, r.exhausted, r.refused, perConn, maxStreams)
		}
		open++
		held += r.answered
		exhausted += r.exhausted
	}
	if open != maxConns || closed != conns-maxConns {
		t.Errorf("%d connections served, %d closed; want %d and %d", open, closed, maxConns, conns-maxConns)
	}
	if held != maxCaller || exhausted == 0 {
		t.Errorf("%d streams held and %d exhausted across connections; want %d held and some exhausted", held, exhausted, maxCaller)
	}
	if got := testutil.ToFloat64(m.GRPCConnsRefused); got != conns-maxConns {
		t.Errorf("refused connections counted: %v, want %d", got, conns-maxConns)
	}
	if got := testutil.ToFloat64(m.GRPCStreamsRefused); got != float64(exhausted) {
		t.Errorf("refused streams counted: %v, want %d", got, exhausted)
	}
	// Unlimited, this flood holds 10 000 streams and costs the server
	// well over 100 MiB; bounded, it holds 128.
	const bound = 32 << 20
	t.Logf("live heap and stacks grew by %d KiB during the flood", grown>>10)
	if grown > bound {
		t.Errorf("live memory grew by %d MiB during the flood, more than %d MiB", grown>>20, bound>>20)
	}
	for _, f := range flood {
		_ = f.conn.Close()
	}
}

// TestStreamLimitMakesClientsWait: a well-behaved gRPC client over one
// connection queues calls beyond the limit until a stream ends, instead
// of failing them.
func TestStreamLimitMakesClientsWait(t *testing.T) {
	t.Parallel()
	const maxStreams = 4
	env := servertest.Start(t, servertest.Options{Listen: "127.0.0.1:0", Server: func(o *grpcserver.Options) {
		o.MaxConcurrentStreams = maxStreams
	}})
	health := healthpb.NewHealthClient(env.Conn)
	watch := func(ctx context.Context) error {
		s, err := health.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		_, err = s.Recv()
		return err
	}
	cancels := make([]context.CancelFunc, maxStreams)
	for i := range cancels {
		ctx, cancel := context.WithCancel(t.Context())
		t.Cleanup(cancel)
		cancels[i] = cancel
		if err := watch(ctx); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	// One more waits: it can only end by its deadline while all are open.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	err := watch(ctx)
	cancel()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("stream over the limit: %v, want it to wait until its deadline", err)
	}
	// When one ends, the next call gets its stream.
	cancels[0]()
	ctx, cancel = context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := watch(ctx); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("stream after one ended: %v", err)
	}
}
