package grpcserver_test

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/grpcserver"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/grpcserver/servertest"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// BenchmarkConfigChangeToLastAck measures how long a committed change
// takes to be ACKed by every one of N edges, each on its own loopback TCP
// connection. One op is one change. Persistence is skipped (it is the
// disk, not the push) and the debounce is zero.
//
//	go test -run '^$' -bench ConfigChangeToLastAck -benchtime 20x ./controlplane/internal/grpcserver/ -bench-edges 100,1000,5000
func BenchmarkConfigChangeToLastAck(b *testing.B) {
	for _, f := range strings.Split(*benchEdges, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			b.Fatalf("-bench-edges %q: want a comma-separated list of counts", *benchEdges)
		}
		b.Run(fmt.Sprintf("edges=%d", n), func(b *testing.B) { benchPush(b, n) })
	}
}

var benchEdges = flag.String("bench-edges", "100,1000", "edge counts of BenchmarkConfigChangeToLastAck")

func benchPush(b *testing.B, n int) {
	env := servertest.Start(b, servertest.Options{Listen: "127.0.0.1:0", Server: func(o *grpcserver.Options) {
		o.Source = noSave{o.Source}
	}})
	store := env.Server.Store()
	var target atomic.Value // version every edge must ACK
	ns, _ := store.Current().Namespace("team-a")
	target.Store(ns.Config.GetVersion())
	var acked atomic.Int64
	done := make(chan struct{}, 1)

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := range n {
		conn, err := grpc.NewClient(env.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		stream, err := selfhostv1.NewConfigDiscoveryServiceClient(conn).StreamConfig(servertest.WithToken(ctx, servertest.EdgeToken("team-a")))
		if err != nil {
			b.Fatal(err)
		}
		if err := stream.Send(&selfhostv1.StreamConfigRequest{Kind: &selfhostv1.StreamConfigRequest_Hello{Hello: &selfhostv1.Hello{Pod: fmt.Sprintf("edge-%d", i)}}}); err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				m, err := stream.Recv()
				if err != nil {
					return
				}
				c := m.GetConfig()
				if err := stream.Send(&selfhostv1.StreamConfigRequest{Kind: &selfhostv1.StreamConfigRequest_Ack{Ack: &selfhostv1.Ack{Version: c.GetVersion(), Nonce: c.GetNonce(), Accepted: true}}}); err != nil {
					return
				}
				if c.GetVersion() == target.Load() && acked.Add(1) == int64(n) {
					done <- struct{}{}
				}
			}
		}()
	}
	<-done // every edge has its first snapshot
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	perEdge := float64(after.HeapInuse+after.StackInuse-before.HeapInuse-before.StackInuse) / float64(n)

	var latencies []time.Duration
	b.ResetTimer()
	for i := range b.N {
		acked.Store(0)
		url := fmt.Sprintf("https://gcr-%d.example", i%2)
		set, err := store.PutUpstream(ctx, &selfhostv1.Upstream{Prefix: "gcr", Url: url})
		if err != nil {
			b.Fatal(err)
		}
		ns, _ := set.Namespace("team-a")
		start := time.Now()
		target.Store(ns.Config.GetVersion())
		<-done
		latencies = append(latencies, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(latencies)
	b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(perEdge/1024, "KiB/edge(client+server)")
	cancel()
	wg.Wait()
}
