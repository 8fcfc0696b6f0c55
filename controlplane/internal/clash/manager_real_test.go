package clash

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/clash/clashtest"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	testharness "github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// TestManagerRealProxies runs the whole chain against real servers on
// loopback: a subscription over HTTP (both formats), ss-server (two
// ciphers), microsocks and tinyproxy, a node on a closed port and one with
// a wrong password, probes through mihomo to a registry-like target. Then
// the selected node's process is killed: the next probe round replaces it.
func TestManagerRealProxies(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"clash-yaml", "base64-links"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			target := clashtest.StartProbeTarget(t)
			servers := map[string]*testharness.ProxyServer{
				"ss-aes":    testharness.StartShadowsocks(t, testharness.ProxyOptions{Cipher: "aes-256-gcm"}),
				"ss-chacha": testharness.StartShadowsocks(t, testharness.ProxyOptions{Cipher: "chacha20-ietf-poly1305"}),
				"socks":     testharness.StartMicrosocks(t, testharness.ProxyOptions{Username: "puller"}),
				"http":      testharness.StartTinyproxy(t, testharness.ProxyOptions{}),
			}
			wrong := servers["ss-aes"].NodeAs("wrong-password")
			wrong["password"] = "wrong-Secret-pw"
			closed := map[string]any{"name": "closed-port", "type": "socks5", "server": "127.0.0.1", "port": testkit.FreePort(t)}
			nodes := []map[string]any{closed, wrong}
			var links []string
			for _, name := range []string{"ss-aes", "ss-chacha", "socks", "http"} {
				nodes = append(nodes, servers[name].NodeAs(name))
				links = append(links, servers[name].LinkAs(name))
			}
			body := clashtest.ClashYAML(nodes...)
			if format == "base64-links" {
				body = clashtest.Base64(clashtest.Links(links...))
			}
			sub := clashtest.StartSubscription(t, body)
			src, err := NewHTTPSource(sub.SubURL())
			if err != nil {
				t.Fatal(err)
			}
			h := newHarness(t, func(o *Options) {
				o.Source, o.Prober, o.ProbeURL = src, MihomoProber{}, target.V2()
				o.ProbeInterval, o.ProbeTimeout = 100*time.Millisecond, 500*time.Millisecond
			})
			h.run(t)
			want := 4
			eventually(t, "four live nodes selected", func() bool { return len(strings.Fields(h.order())) == want })
			st := h.mgr.Status()
			if format == "clash-yaml" {
				reasons := map[string]string{}
				for _, n := range st.Nodes {
					reasons[n.Name] = n.LastError
				}
				if !strings.Contains(reasons["closed-port"], "refused") || !strings.Contains(reasons["wrong-password"], "deadline exceeded") {
					t.Fatalf("dead nodes' reasons: %q", reasons)
				}
			}
			// Kill the selected node: the next probe round replaces it.
			selected := h.store.Current().Proxy.Selected
			servers[selected].Kill()
			eventually(t, "the dead node replaced", func() bool {
				p := h.store.Current().Proxy
				return p.Selected != selected && !strings.Contains(" "+strings.Join(p.Order, " ")+" ", " "+selected+" ")
			})
			for _, n := range h.mgr.Status().Nodes {
				if n.Name == selected && (n.Alive || n.LastError == "") {
					t.Errorf("killed node %+v", n)
				}
			}
			logs := h.logs.String()
			for _, secret := range []string{sub.Token, servers["ss-aes"].Password, servers["ss-chacha"].Password, servers["socks"].Password, "wrong-Secret-pw"} {
				if strings.Contains(logs, secret) {
					t.Fatalf("the log holds a secret %q", secret)
				}
			}
			if !strings.Contains(logs, `"proxy selection changed"`) {
				t.Error("re-selection not logged")
			}
		})
	}
}

// TestManagerRealSubscriptionErrors: the subscription server fails after
// a good fetch; the pool stays, the error names the status, not the URL.
func TestManagerRealSubscriptionErrors(t *testing.T) {
	t.Parallel()
	target := clashtest.StartProbeTarget(t)
	socks := testharness.StartMicrosocks(t, testharness.ProxyOptions{})
	sub := clashtest.StartSubscription(t, clashtest.Links(socks.LinkAs("only")))
	src, err := NewHTTPSource(sub.SubURL())
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(o *Options) { o.Source, o.Prober, o.ProbeURL = src, MihomoProber{}, target.V2() })
	if _, err := h.mgr.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		status int
		body   string
		want   string
	}{
		{http.StatusForbidden, "token expired", "answered 403 Forbidden"},
		{http.StatusOK, "<!doctype html><title>Login</title>", "HTML page"},
		{http.StatusOK, strings.Repeat("A", DefaultMaxSubscriptionBytes+1), "larger than"},
	} {
		sub.Set(tc.status, []byte(tc.body))
		_, err := h.mgr.Refresh(t.Context())
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), sub.Token) {
			t.Fatalf("Refresh = %v, want %q without the token", err, tc.want)
		}
		if st := h.mgr.Status(); len(st.Nodes) != 1 || !st.Nodes[0].Alive || st.FetchError != err.Error() {
			t.Fatalf("status %+v", st)
		}
	}
	if strings.Contains(h.logs.String(), sub.Token) {
		t.Fatal("the log holds the subscription token")
	}
}
