package server

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/certs"
)

func writePair(t *testing.T, dir string, b *certs.Bundle) (certFile, keyFile string) {
	t.Helper()
	key, err := certs.EncodeKey(b.Serving.Key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	for f, data := range map[string][]byte{certFile: certs.EncodeCertificates(b.Serving.Cert), keyFile: key} {
		if err := os.WriteFile(f, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

// TestTLSListener: with --tls-cert the registry listener speaks TLS with
// that certificate, and a renewed pair is served without a restart.
func TestTLSListener(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	now := time.Now()
	first, err := certs.Generate(now, []string{"127.0.0.1"}, certs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := writePair(t, dir, first)
	if _, err := (Config{Listen: "127.0.0.1:0", TLSCert: certFile}).listen(); err == nil {
		t.Fatal("--tls-cert without --tls-key was accepted")
	}
	ln, err := Config{Listen: "127.0.0.1:0", TLSCert: certFile, TLSKey: keyFile}.listen()
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	get := func(ca *x509.Certificate) error {
		pool := x509.NewCertPool()
		pool.AddCert(ca)
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		resp, err := c.Get("https://" + ln.Addr().String() + "/v2/")
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get(first.CA.Cert); err != nil {
		t.Fatalf("https with the first certificate: %v", err)
	}
	resp, err := http.Get("http://" + ln.Addr().String() + "/v2/")
	if err == nil && resp.StatusCode == http.StatusOK {
		t.Error("plain HTTP answered 200 on a TLS listener")
	}

	// Renewal: the files change in place; after the check interval the
	// new pair is served.
	second, err := certs.Generate(now, []string{"127.0.0.1"}, certs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := newServingCert(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	clock := now
	sc.now = func() time.Time { return clock }
	writePair(t, dir, second)
	later := now.Add(time.Minute)
	for _, f := range []string{certFile, keyFile} {
		if err := os.Chtimes(f, later, later); err != nil {
			t.Fatal(err)
		}
	}
	clock = now.Add(2 * certCheckInterval)
	got, err := sc.get(nil)
	if err != nil {
		t.Fatalf("after renewal: %v", err)
	}
	if !sameCert(got, second.Serving.Cert) {
		t.Error("the renewed certificate is not served")
	}
}

func sameCert(c *tls.Certificate, want *x509.Certificate) bool {
	return len(c.Certificate) > 0 && string(c.Certificate[0]) == string(want.Raw)
}
