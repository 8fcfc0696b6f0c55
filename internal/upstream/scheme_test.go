package upstream

import (
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream/upstreamtest"
)

// TestSchemes: an http:// upstream is spoken to in plain HTTP only (no TLS
// attempt first); an https:// upstream uses TLS with HTTP/2 through the
// custom dialer and is never downgraded, even on loopback where ggcr would
// fall back to http.
func TestSchemes(t *testing.T) {
	t.Parallel()
	f := newFixture()

	t.Run("http", func(t *testing.T) {
		t.Parallel()
		var tlsAttempts atomic.Int64
		srv := httptest.NewUnstartedServer(upstreamtest.RequireBearer(f.reg))
		srv.Listener = &sniffListener{Listener: srv.Listener, tls: &tlsAttempts}
		srv.Start()
		t.Cleanup(srv.Close)
		c := newTestClient(t, srv.URL, Registry{})
		if _, err := c.Manifest(testCtx(t), testRepo, "latest", false); err != nil {
			t.Fatal(err)
		}
		if n := tlsAttempts.Load(); n != 0 {
			t.Errorf("%d TLS handshakes sent to a plain http upstream", n)
		}
	})

	t.Run("https with HTTP/2", func(t *testing.T) {
		t.Parallel()
		var proto atomic.Int64
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			proto.Store(int64(r.ProtoMajor))
			f.reg.ServeHTTP(w, r)
		}))
		srv.EnableHTTP2 = true
		srv.StartTLS()
		t.Cleanup(srv.Close)
		d := &countingDialer{}
		tlsCfg := srv.Client().Transport.(*http.Transport).TLSClientConfig
		c := newTestClient(t, srv.URL, Registry{}, WithTLSConfig(tlsCfg), WithDialer(d.DialContext))
		if _, err := c.Manifest(testCtx(t), testRepo, "latest", false); err != nil {
			t.Fatal(err)
		}
		if proto.Load() != 2 || d.n.Load() == 0 {
			t.Errorf("proto HTTP/%d, dials %d; want HTTP/2 through the dialer", proto.Load(), d.n.Load())
		}
	})

	t.Run("https with an untrusted certificate fails, no downgrade", func(t *testing.T) {
		t.Parallel()
		var plain atomic.Int64
		srv := httptest.NewUnstartedServer(f.reg)
		srv.Listener = &sniffListener{Listener: srv.Listener, plain: &plain}
		srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the expected handshake failure
		srv.StartTLS()
		t.Cleanup(srv.Close)
		c := newTestClient(t, srv.URL, Registry{})
		if _, err := c.Manifest(testCtx(t), testRepo, "latest", false); err == nil {
			t.Fatal("want a certificate error")
		}
		if n := plain.Load(); n != 0 {
			t.Errorf("%d plain-HTTP connections to an https upstream", n)
		}
	})
}

// sniffListener counts connections whose first byte is (or is not) a TLS
// handshake record.
type sniffListener struct {
	net.Listener
	tls, plain *atomic.Int64
}

func (l *sniffListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sniffConn{Conn: c, l: l}, nil
}

type sniffConn struct {
	net.Conn
	l    *sniffListener
	seen bool
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.seen {
		c.seen = true
		if p[0] == 0x16 && c.l.tls != nil {
			c.l.tls.Add(1)
		} else if p[0] != 0x16 && c.l.plain != nil {
			c.l.plain.Add(1)
		}
	}
	return n, err
}
