package certs

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

var (
	t0    = time.Date(2031, 3, 1, 12, 0, 0, 0, time.UTC)
	hosts = []string{"injector.selfhost-system.svc", "injector.selfhost-system", "127.0.0.1"}
	day   = 24 * time.Hour
)

func generate(t *testing.T, now time.Time, opts Options) *Bundle {
	t.Helper()
	b, err := Generate(now, hosts, opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGenerate(t *testing.T) {
	t.Parallel()
	b := generate(t, t0, Options{})
	ca, srv := b.CA.Cert, b.Serving.Cert
	if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 || ca.Subject.CommonName != DefaultCACommonName {
		t.Fatalf("CA: IsCA %v usage %v subject %q", ca.IsCA, ca.KeyUsage, ca.Subject)
	}
	if got := ca.NotAfter.Sub(t0); got != DefaultCAValidity {
		t.Errorf("CA valid for %s, want %s", got, DefaultCAValidity)
	}
	if got := srv.NotAfter.Sub(t0); got != DefaultServingValidity {
		t.Errorf("serving valid for %s, want %s", got, DefaultServingValidity)
	}
	if srv.IsCA || len(srv.ExtKeyUsage) != 1 || srv.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("serving: IsCA %v ext usage %v", srv.IsCA, srv.ExtKeyUsage)
	}
	if _, ok := srv.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Errorf("serving key %T, want ECDSA", srv.PublicKey)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	for _, h := range hosts {
		if _, err := srv.Verify(x509.VerifyOptions{DNSName: h, Roots: pool, CurrentTime: t0}); err != nil {
			t.Errorf("verify for %s: %v", h, err)
		}
	}
	if _, err := srv.Verify(x509.VerifyOptions{DNSName: "other.example", Roots: pool, CurrentTime: t0}); err == nil {
		t.Errorf("serving certificate verifies for a host it does not name")
	}
	if b.CA.Cert.SerialNumber.Cmp(generate(t, t0, Options{}).CA.Cert.SerialNumber) == 0 {
		t.Errorf("two CAs with one serial number")
	}
}

func TestIssueNeverOutlivesCA(t *testing.T) {
	t.Parallel()
	ca, err := NewCA(t0, Options{CAValidity: 40 * day})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Issue(ca, t0, hosts, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !srv.Cert.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Fatalf("serving until %s, CA until %s", srv.Cert.NotAfter, ca.Cert.NotAfter)
	}
}

func TestIssueRejectsHosts(t *testing.T) {
	t.Parallel()
	ca, err := NewCA(t0, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, hs := range [][]string{nil, {""}, {"a b"}, {"https://x"}, {"ok", "x:443"}} {
		if _, err := Issue(ca, t0, hs, Options{}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "hosts") {
			t.Errorf("Issue(%q) = %v, want ErrInvalid naming hosts", hs, err)
		}
	}
}

func TestNeedsRotation(t *testing.T) {
	t.Parallel()
	b := generate(t, t0, Options{})
	other := generate(t, t0, Options{})
	notCA, err := Issue(b.CA, t0, []string{"x"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		bundle *Bundle
		now    time.Time
		hosts  []string
		want   Rotation
		reason string
	}{
		{"fresh", b, t0, hosts, RotateNone, ""},
		{"hosts in another order, duplicated, upper-case", b, t0, []string{"127.0.0.1", "INJECTOR.selfhost-system", "injector.selfhost-system.svc", "127.0.0.1"}, RotateNone, ""},
		{"59 days on", b, t0.Add(59 * day), hosts, RotateNone, ""},
		{"61 days on: under a third left", b, t0.Add(61 * day), hosts, RotateServing, "a third of its lifetime"},
		{"after expiry", b, t0.Add(91 * day), hosts, RotateServing, "a third"},
		{"before NotBefore", b, t0.Add(-time.Hour), hosts, RotateServing, "not valid before"},
		{"a host added", b, t0, append([]string{"new.example"}, hosts...), RotateServing, "names"},
		{"a host removed", b, t0, hosts[:2], RotateServing, "names"},
		{"serving from another CA", &Bundle{CA: other.CA, Serving: b.Serving}, t0, hosts, RotateServing, "not signed by the CA"},
		{"CA with 29 days left", b, t0.Add(DefaultCAValidity - 29*day), hosts, RotateCA, "the CA expires"},
		{"CA that is not a CA", &Bundle{CA: notCA, Serving: b.Serving}, t0, hosts, RotateCA, "not a CA"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, reason := tc.bundle.NeedsRotation(tc.now, tc.hosts, Options{})
			if got != tc.want || !strings.Contains(reason, tc.reason) || (tc.want == RotateNone) != (reason == "") {
				t.Fatalf("NeedsRotation = %s %q, want %s %q", got, reason, tc.want, tc.reason)
			}
		})
	}
}

func TestPEMRoundTrip(t *testing.T) {
	t.Parallel()
	b := generate(t, t0, Options{})
	for name, kp := range map[string]*KeyPair{"ca": b.CA, "serving": b.Serving} {
		key, err := EncodeKey(kp.Key)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseKeyPair(EncodeCertificates(kp.Cert), key)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !got.Cert.Equal(kp.Cert) || !got.Key.Equal(kp.Key) {
			t.Fatalf("%s: round trip changed the pair", name)
		}
	}
	bundle, err := ParseCertificates(EncodeCertificates(b.CA.Cert, b.Serving.Cert))
	if err != nil || len(bundle) != 2 || !bundle[1].Equal(b.Serving.Cert) {
		t.Fatalf("bundle: %v, %d certificates", err, len(bundle))
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(b.Serving.Key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseKeyPair(EncodeCertificates(b.Serving.Cert), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})); err != nil {
		t.Fatalf("PKCS #8 key: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	b := generate(t, t0, Options{})
	certPEM := EncodeCertificates(b.Serving.Cert)
	keyPEM, err := EncodeKey(b.Serving.Key)
	if err != nil {
		t.Fatal(err)
	}
	caKeyPEM, err := EncodeKey(b.CA.Key)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024) //nolint:gosec // a test key of the wrong type
	if err != nil {
		t.Fatal(err)
	}
	rsaDER, err := x509.MarshalPKCS8PrivateKey(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		cert, key []byte
		want      string
	}{
		{"empty certificate", nil, keyPEM, "certificate: invalid certificate material: empty"},
		{"certificate not PEM", []byte("hello"), keyPEM, "certificate: invalid certificate material: not PEM"},
		{"certificate is a key", keyPEM, keyPEM, `PEM block "EC PRIVATE KEY", want CERTIFICATE`},
		{"certificate DER garbage", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}), keyPEM, "certificate: invalid certificate material: x509"},
		{"two certificates", EncodeCertificates(b.Serving.Cert, b.CA.Cert), keyPEM, "2 certificates, want 1"},
		{"key not PEM", certPEM, []byte("hello"), "key: invalid certificate material: not PEM"},
		{"key is a certificate", certPEM, certPEM, `PEM block "CERTIFICATE", want EC PRIVATE KEY`},
		{"two keys", certPEM, append(keyPEM, keyPEM...), "more than one PEM block"},
		{"RSA key", certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: rsaDER}), "want ECDSA"},
		{"key garbage", certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1}}), "key: invalid certificate material"},
		{"key of another certificate", certPEM, caKeyPEM, "does not match the certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseKeyPair(tc.cert, tc.key)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseKeyPair = %v, want ErrInvalid containing %q", err, tc.want)
			}
		})
	}
}

// TestHandshake: an HTTPS client that trusts only the CA accepts the
// serving certificate for an IP and for a DNS name.
func TestHandshake(t *testing.T) {
	t.Parallel()
	b := generate(t, time.Now(), Options{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*b.TLSCertificate()}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(b.CA.Cert)
	for _, name := range []string{"127.0.0.1", "injector.selfhost-system.svc"} {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: name, MinVersion: tls.VersionTLS12}}}
		resp, err := c.Get(srv.URL)
		if err != nil {
			t.Fatalf("GET as %s: %v", name, err)
		}
		_ = resp.Body.Close()
		c.CloseIdleConnections()
	}
}
