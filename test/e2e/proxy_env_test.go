package e2e

import (
	"bytes"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// proxyWait bounds waits for control-plane messages in the Clash tests.
const proxyWait = 30 * time.Second

// proxyNet is the isolated set-up of the Clash tests (docs/edge-proxy.md): the
// upstream docker-registry runs in one network namespace, the edge in
// another, and the proxy servers in the root namespace between them,
// bound to the edge namespace's veth peer. The edge's namespace has a
// route to the proxy servers' address only, so the registry is reachable
// from the edge through a proxy or not at all: a successful pull proves
// the proxy path.
type proxyNet struct {
	regNS, edgeNS *harness.Netns
	reg           *harness.Registry
}

func newProxyNet(t *testing.T) *proxyNet {
	t.Helper()
	n := &proxyNet{regNS: harness.NewNetns(t), edgeNS: harness.NewNetns(t)}
	n.reg = harness.StartDockerRegistryIn(t, n.regNS)
	return n
}

// proxyOptions places a proxy server where the edge can reach it and lets
// tinyproxy accept the edge's address.
func (n *proxyNet) proxyOptions(name string) harness.ProxyOptions {
	return harness.ProxyOptions{Name: name, Host: n.edgeNS.HostAddr, AllowFrom: []string{n.edgeNS.NSAddr}}
}

// startEdge starts an edge in the edge namespace with the registry as
// upstream "test" plus args.
func (n *proxyNet) startEdge(t *testing.T, args ...string) *harness.Edge {
	t.Helper()
	return n.startEdgeWith(t, harness.EdgeOptions{Args: args})
}

// startEdgeWith is startEdge with environment too.
func (n *proxyNet) startEdgeWith(t *testing.T, o harness.EdgeOptions) *harness.Edge {
	t.Helper()
	o.Args = append([]string{"--upstream", prefix + "=" + n.reg.URL, "--log-level", "debug"}, o.Args...)
	return harness.StartEdgeIn(t, n.edgeNS, o)
}

// pullThrough pulls im through edge with crane and checks every blob and
// the manifest against what was pushed.
func pullThrough(t *testing.T, edge *harness.Edge, im harness.Image) {
	t.Helper()
	ref := im.Ref(edge.Addr, prefix)
	blobs := harness.CranePullOCI(t, ref)
	for _, d := range im.Blobs() {
		if _, ok := blobs[d]; !ok {
			t.Fatalf("crane pull %s: blob %s missing", ref, d)
		}
	}
	if got := harness.CraneManifest(t, ref); !bytes.Equal(got, im.Manifest) {
		t.Fatalf("crane manifest %s differs from what was pushed", ref)
	}
}
