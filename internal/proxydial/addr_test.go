package proxydial_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/clashnode"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/proxydial"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// TestAddressForms: destinations as IPv4, IPv6 and host names; proxy
// servers given as an IPv6 literal (mihomo's resolver refuses IPv6 unless
// Setup enables it) and as a name from /etc/hosts.
func TestAddressForms(t *testing.T) {
	t.Parallel()
	v6 := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("v6 " + r.Host))
	}))
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatalf("IPv6 loopback: %v", err)
	}
	v6.Listener = l
	v6.Start()
	t.Cleanup(v6.Close)
	v4 := helloServer(t, false)
	_, v4port, _ := net.SplitHostPort(strings.TrimPrefix(v4.URL, "http://"))

	ssV6 := harness.StartShadowsocks(t, harness.ProxyOptions{Name: "ss-v6", Host: "::1"})
	socks := harness.StartMicrosocks(t, harness.ProxyOptions{Name: "socks"})
	byName := map[string]any{}
	for k, v := range socks.Node {
		byName[k] = v
	}
	byName["name"], byName["server"] = "socks-by-name", "localhost"
	hostsNode, err := clashnode.New(byName)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []*clashnode.Node{node(t, ssV6), node(t, socks), hostsNode} {
		d, _ := proxydial.NewDialer("test", []*clashnode.Node{n}, proxydial.WithDialTimeout(5*time.Second))
		client := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 20 * time.Second}
		for _, url := range []string{v6.URL + "/", v4.URL + "/ip", "http://localhost:" + v4port + "/name"} {
			resp, err := client.Get(url)
			if err != nil {
				t.Errorf("%s → %s: %v", n, url, err)
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("%s → %s: status %d", n, url, resp.StatusCode)
			}
		}
		client.CloseIdleConnections()
	}
}
