package upstream

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
)

func TestClassOf(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]addrClass{
		"8.8.8.8": classPublic, "2606:4700::1111": classPublic, "192.0.2.2": classPublic,
		"10.1.2.3": classPrivate, "172.16.0.1": classPrivate, "192.168.1.1": classPrivate, "100.64.0.1": classPrivate, "fd00::2": classPrivate,
		"169.254.169.254": classLinkLocal, "fe80::1": classLinkLocal,
		"127.0.0.1": classLoopback, "127.9.9.9": classLoopback, "::1": classLoopback, "0.0.0.0": classLoopback, "::ffff:127.0.0.1": classLoopback,
	} {
		if got := classOf(netip.MustParseAddr(addr)); got != want {
			t.Errorf("classOf(%s) = %s, want %s", addr, got, want)
		}
	}
}

// hostIP is a non-loopback IPv4 address of this machine: an upstream there
// is less internal than loopback.
func hostIP(t *testing.T) netip.Addr {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && classOf(p.Addr()) < classLoopback {
			return p.Addr()
		}
	}
	t.Fatalf("set-up: this machine has no non-loopback IPv4 address; addresses: %v", addrs)
	return netip.Addr{}
}

// TestRedirectAddressClass: an upstream may redirect to addresses of its
// own class or a more external one, never to a more internal one, unless
// WithInternalRedirects is set.
func TestRedirectAddressClass(t *testing.T) {
	t.Parallel()
	ip := hostIP(t)
	d := oci.FromBytes([]byte(testLayer))
	// The redirect target listens on every address: reachable as loopback
	// and as the host's address.
	tl, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	target := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, testLayer)
	}))
	target.Listener = tl
	target.Start()
	t.Cleanup(target.Close)
	port := strconv.Itoa(tl.Addr().(*net.TCPAddr).Port)

	upstreamOn := func(listenIP netip.Addr, redirectHost string) string {
		ln, err := net.Listen("tcp", net.JoinHostPort(listenIP.String(), "0"))
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/v2/" {
				return
			}
			http.Redirect(w, r, "http://"+net.JoinHostPort(redirectHost, port)+"/object", http.StatusTemporaryRedirect)
		}))
		srv.Listener = ln
		srv.Start()
		t.Cleanup(srv.Close)
		return srv.URL
	}
	for _, tc := range []struct {
		name     string
		upstream netip.Addr
		redirect string
		opts     []Option
		refused  bool
	}{
		{"host address to loopback", ip, "127.0.0.1", nil, true},
		{"host address to localhost", ip, "localhost", nil, true},
		{"host address to itself", ip, ip.String(), nil, false},
		{"loopback to host address", netip.MustParseAddr("127.0.0.1"), ip.String(), nil, false},
		{"loopback to loopback", netip.MustParseAddr("127.0.0.1"), "127.0.0.1", nil, false},
		{"allowed by the operator", ip, "127.0.0.1", []Option{WithInternalRedirects()}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newTestClient(t, upstreamOn(tc.upstream, tc.redirect), Registry{}, tc.opts...)
			b, err := c.Blob(testCtx(t), testRepo, d)
			if tc.refused {
				if !errors.Is(err, ErrInternalAddress) {
					t.Fatalf("redirect to %s: err = %v, want ErrInternalAddress", tc.redirect, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("redirect to %s: %v", tc.redirect, err)
			}
			defer b.Body.Close()
			if got, err := io.ReadAll(b.Body); err != nil || string(got) != testLayer {
				t.Fatalf("body %q, %v", got, err)
			}
		})
	}
}
