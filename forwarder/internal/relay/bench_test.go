package relay

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
)

// benchBytes is one warm blob pull's size, as the forwarder's benchmark
// in docs/kubernetes.md ("Node access") uses.
const benchBytes = 512 << 20

// blobServer sends benchBytes of zeros to every connection (a warm edge
// serving from the page cache costs about as little) and closes it.
func blobServer(b *testing.B) netip.AddrPort {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ln.Close() })
	buf := make([]byte, 1<<20)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				for sent := 0; sent < benchBytes; sent += len(buf) {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func pull(b *testing.B, addr string) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	n, err := io.Copy(io.Discard, c)
	if err != nil || n != benchBytes {
		b.Fatalf("pulled %d bytes: %v", n, err)
	}
}

// BenchmarkPull512MiB pulls 512 MiB from a loopback server directly and
// through the relay, alternating (go test -bench Pull512MiB -count 5):
// the relay's cost on the data path is one more loopback hop, spliced.
func BenchmarkPull512MiB(b *testing.B) {
	srv := blobServer(b)
	r := New(Options{Logger: slog.New(slog.DiscardHandler)})
	b.Cleanup(func() { _ = r.Close(context.Background()) })
	port := testkit.FreePort(b)
	r.Set([]Route{{Name: "bench/selfhost-edge", Port: port, Target: srv}})
	for _, c := range []struct{ name, addr string }{{"direct", srv.String()}, {"relay", addr(port)}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(benchBytes)
			for b.Loop() {
				pull(b, c.addr)
			}
		})
	}
}

// BenchmarkPull100Concurrent runs 100 concurrent 512 MiB pulls through
// the relay and reports the test process's peak RSS: an upper bound of
// the relay's, since the server and the clients live in the same process.
func BenchmarkPull100Concurrent(b *testing.B) {
	srv := blobServer(b)
	r := New(Options{Logger: slog.New(slog.DiscardHandler)})
	b.Cleanup(func() { _ = r.Close(context.Background()) })
	port := testkit.FreePort(b)
	r.Set([]Route{{Name: "bench/selfhost-edge", Port: port, Target: srv}})
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if kib := vmRSSKiB(); kib > peak.Load() {
				peak.Store(kib)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	b.SetBytes(100 * benchBytes)
	for b.Loop() {
		var wg sync.WaitGroup
		for range 100 {
			wg.Go(func() { pull(b, addr(port)) })
		}
		wg.Wait()
	}
	close(stop)
	<-sampled
	b.ReportMetric(float64(peak.Load())/1024, "peak-RSS-MiB")
}

// vmRSSKiB is this process's resident set size from /proc/self/status.
func vmRSSKiB() int64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n
		}
	}
	return 0
}
