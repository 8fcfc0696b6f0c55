package clash

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/clash/clashtest"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/clashnode"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	testharness "github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

func mustNode(t *testing.T, m map[string]any) *clashnode.Node {
	t.Helper()
	n, err := clashnode.New(m)
	if err != nil {
		t.Fatalf("clashnode.New(%v): %v", m["name"], err)
	}
	return n
}

func probeWithin(t *testing.T, n *clashnode.Node, url string, timeout time.Duration) (time.Duration, time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	start := time.Now()
	d, err := MihomoProber{Grace: 500 * time.Millisecond}.Probe(ctx, n, url)
	return d, time.Since(start), err
}

// TestProbeRealProxies probes through each kind of real proxy server: any
// HTTP answer (here the registry's 401) means alive.
func TestProbeRealProxies(t *testing.T) {
	t.Parallel()
	target := clashtest.StartProbeTarget(t)
	servers := map[string]*testharness.ProxyServer{
		"ss aes-256-gcm":            testharness.StartShadowsocks(t, testharness.ProxyOptions{Cipher: "aes-256-gcm"}),
		"ss chacha20-ietf-poly1305": testharness.StartShadowsocks(t, testharness.ProxyOptions{Cipher: "chacha20-ietf-poly1305"}),
		"socks5":                    testharness.StartMicrosocks(t, testharness.ProxyOptions{}),
		"socks5 with auth":          testharness.StartMicrosocks(t, testharness.ProxyOptions{Username: "puller"}),
		"http (tinyproxy)":          testharness.StartTinyproxy(t, testharness.ProxyOptions{}),
	}
	for name, srv := range servers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, n := range []*clashnode.Node{mustNode(t, srv.NodeAs(name)), linkNode(t, srv.LinkAs(name))} {
				before := target.Hits.Load()
				d, _, err := probeWithin(t, n, target.V2(), 5*time.Second)
				if err != nil {
					t.Fatalf("probe through %s (%s): %v", n.Name(), n.JSON(), err)
				}
				if d <= 0 || d > 2*time.Second {
					t.Errorf("latency %v", d)
				}
				if target.Hits.Load() == before {
					t.Error("the probe did not reach the target")
				}
			}
		})
	}
}

// linkNode parses a one-line share-link subscription.
func linkNode(t *testing.T, link string) *clashnode.Node {
	t.Helper()
	sub, err := Parse([]byte(link + "\n"))
	if err != nil || len(sub.Nodes) != 1 {
		t.Fatalf("Parse(%s) = %v, %v", link, sub, err)
	}
	return sub.Nodes[0]
}

func TestProbeFailures(t *testing.T) {
	t.Parallel()
	target := clashtest.StartProbeTarget(t)
	ss := testharness.StartShadowsocks(t, testharness.ProxyOptions{Cipher: "aes-256-gcm"})
	socks := testharness.StartMicrosocks(t, testharness.ProxyOptions{Username: "puller"})
	const timeout = 700 * time.Millisecond

	t.Run("closed port fails fast", func(t *testing.T) {
		t.Parallel()
		n := mustNode(t, map[string]any{"name": "closed", "type": "socks5", "server": "127.0.0.1", "port": testkit.FreePort(t)})
		_, took, err := probeWithin(t, n, target.V2(), timeout)
		if err == nil || took > timeout/2 {
			t.Fatalf("err = %v after %v, want a quick failure", err, took)
		}
	})
	t.Run("wrong ss password hangs until the deadline", func(t *testing.T) {
		t.Parallel()
		m := ss.NodeAs("wrong")
		m["password"] = "not-the-Secret-password"
		_, took, err := probeWithin(t, mustNode(t, m), target.V2(), timeout)
		if err == nil || took < timeout*9/10 || took > timeout+time.Second {
			t.Fatalf("err = %v after %v, want a deadline after ~%v", err, took, timeout)
		}
		if strings.Contains(err.Error(), "not-the-Secret-password") {
			t.Fatalf("error leaks the password: %v", err)
		}
	})
	t.Run("wrong socks5 password", func(t *testing.T) {
		t.Parallel()
		m := socks.NodeAs("wrong")
		m["password"] = "wrong-Secret"
		if _, _, err := probeWithin(t, mustNode(t, m), target.V2(), timeout); err == nil {
			t.Fatal("probe succeeded with a wrong password")
		}
	})
	t.Run("target down through a live node", func(t *testing.T) {
		t.Parallel()
		n := mustNode(t, ss.NodeAs("live"))
		url := "http://127.0.0.1:" + strconv.Itoa(testkit.FreePort(t)) + "/v2/"
		if _, _, err := probeWithin(t, n, url, timeout); err == nil {
			t.Fatal("probe of a closed target succeeded")
		}
	})
	t.Run("no deadline is refused", func(t *testing.T) {
		t.Parallel()
		if _, err := (MihomoProber{}).Probe(t.Context(), mustNode(t, ss.NodeAs("x")), target.V2()); err == nil {
			t.Fatal("probe without a deadline ran")
		}
	})
}

func TestProbeNodeThatDies(t *testing.T) {
	t.Parallel()
	target := clashtest.StartProbeTarget(t)
	ss := testharness.StartShadowsocks(t, testharness.ProxyOptions{Cipher: "aes-256-gcm"})
	n := mustNode(t, ss.NodeAs("dies"))
	if _, _, err := probeWithin(t, n, target.V2(), 2*time.Second); err != nil {
		t.Fatalf("before: %v", err)
	}
	ss.Kill()
	if _, took, err := probeWithin(t, n, target.V2(), 2*time.Second); err == nil || took > time.Second {
		t.Fatalf("after kill: err = %v after %v, want a quick failure", err, took)
	}
}
