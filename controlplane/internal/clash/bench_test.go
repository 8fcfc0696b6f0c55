package clash

import (
	"fmt"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/clash/clashtest"
	testharness "github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// BenchmarkProbeRound200 measures one probe round of a 200-node
// subscription through real servers on loopback (50 nodes each on two
// ss-servers, microsocks and tinyproxy), 16 probes at a time: the time a
// dead selected node can stay selected is at most one probe interval plus
// this.
//
//	go test -run '^$' -bench ProbeRound200 ./controlplane/internal/clash/
func BenchmarkProbeRound200(b *testing.B) {
	target := clashtest.StartProbeTarget(b)
	servers := []*testharness.ProxyServer{
		testharness.StartShadowsocks(b, testharness.ProxyOptions{Cipher: "aes-256-gcm"}),
		testharness.StartShadowsocks(b, testharness.ProxyOptions{Cipher: "chacha20-ietf-poly1305"}),
		testharness.StartMicrosocks(b, testharness.ProxyOptions{}),
		testharness.StartTinyproxy(b, testharness.ProxyOptions{}),
	}
	var nodes []map[string]any
	for i := range 200 {
		nodes = append(nodes, servers[i%len(servers)].NodeAs(fmt.Sprintf("node-%03d", i)))
	}
	sub := clashtest.StartSubscription(b, clashtest.ClashYAML(nodes...))
	src, err := NewHTTPSource(sub.SubURL())
	if err != nil {
		b.Fatal(err)
	}
	h := newBenchHarness(b, Options{Source: src, Prober: MihomoProber{}, ProbeURL: target.V2(), ProbeTimeout: 5 * time.Second})
	if _, err := h.Refresh(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		h.probeAll(b.Context())
	}
	b.StopTimer()
	alive := 0
	for _, n := range h.Status().Nodes {
		if n.Alive {
			alive++
		}
	}
	if alive != 200 {
		b.Fatalf("%d of 200 nodes alive", alive)
	}
}
