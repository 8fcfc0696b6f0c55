package configclient

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/certs"
)

// tlsServer is a real gRPC server over TLS whose certificate can be
// swapped, as the control plane's keeper swaps it on rotation.
type tlsServer struct {
	addr string
	cert atomic.Pointer[tls.Certificate]
}

func startTLSServer(t *testing.T, b *certs.Bundle) *tlsServer {
	t.Helper()
	s := &tlsServer{}
	s.cert.Store(b.TLSCertificate())
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return s.cert.Load(), nil
	}}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = lis.Addr().String()
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return s
}

func writeCA(t *testing.T, path string, cas ...*certs.KeyPair) {
	t.Helper()
	var pem []byte
	for _, ca := range cas {
		pem = append(pem, certs.EncodeCertificates(ca.Cert)...)
	}
	if err := os.WriteFile(path, pem, 0o600); err != nil {
		t.Fatal(err)
	}
}

// check dials target with the CA file's credentials on a fresh
// connection and asks grpc.health.v1.
func check(t *testing.T, caFile, target string) error {
	t.Helper()
	creds, err := NewCAFileCredentials(caFile)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func TestCAFileCredentials(t *testing.T) {
	t.Parallel()
	now := time.Now()
	good, err := certs.Generate(now, []string{"127.0.0.1", "cp.sys.svc"}, certs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := certs.NewCA(now, certs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := startTLSServer(t, good)
	_, port, _ := net.SplitHostPort(srv.addr)
	dir := t.TempDir()
	goodCA, otherCA, both := filepath.Join(dir, "good.crt"), filepath.Join(dir, "other.crt"), filepath.Join(dir, "both.crt")
	writeCA(t, goodCA, good.CA)
	writeCA(t, otherCA, other)
	writeCA(t, both, other, good.CA)

	tests := []struct {
		name, caFile, target, wantErr string
	}{
		{"right CA and name", goodCA, srv.addr, ""},
		{"bundle with the CA", both, srv.addr, ""},
		{"wrong CA", otherCA, srv.addr, "is not signed by a CA in"},
		{"wrong server name", goodCA, "localhost:" + port, "does not name the server name localhost"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := check(t, tc.caFile, tc.target)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("health check: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("health check: err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestCAFileCredentialsErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.crt")
	if err := os.WriteFile(junk, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, path, wantErr string }{
		{"missing file", filepath.Join(dir, "nope.crt"), "no such file"},
		{"no certificate", junk, "no PEM certificate"},
	} {
		if _, err := NewCAFileCredentials(tc.path); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.wantErr)
		}
	}
}

// TestCAFileCredentialsRotation: the file is read for every handshake, so
// one credentials value follows a CA rotation (old+new bundle, then the
// new CA alone) without a restart.
func TestCAFileCredentialsRotation(t *testing.T) {
	t.Parallel()
	now := time.Now()
	hosts := []string{"127.0.0.1"}
	oldB, err := certs.Generate(now, hosts, certs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	newB, err := certs.Generate(now, hosts, certs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := startTLSServer(t, oldB)
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	writeCA(t, caFile, oldB.CA)
	creds, err := NewCAFileCredentials(caFile)
	if err != nil {
		t.Fatal(err)
	}
	dial := func() error {
		conn, err := grpc.NewClient(srv.addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	steps := []struct {
		name    string
		fileCAs []*certs.KeyPair
		serving *certs.Bundle
		ok      bool
	}{
		{"old CA", []*certs.KeyPair{oldB.CA}, oldB, true},
		{"server switched, file not yet", []*certs.KeyPair{oldB.CA}, newB, false},
		{"overlap bundle", []*certs.KeyPair{newB.CA, oldB.CA}, newB, true},
		{"new CA only", []*certs.KeyPair{newB.CA}, newB, true},
	}
	for _, st := range steps {
		writeCA(t, caFile, st.fileCAs...)
		srv.cert.Store(st.serving.TLSCertificate())
		if err := dial(); (err == nil) != st.ok {
			t.Fatalf("%s: err = %v, want ok=%v", st.name, err, st.ok)
		}
	}
}
