package relay

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"

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
