package configclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"

	"google.golang.org/grpc/credentials"
)

// caFileCredentials is TLS to the control plane, verified against the CA
// bundle in a file that is read again for every connection: the
// Kubernetes ConfigMap behind it changes when the control plane's CA
// rotates, and a reconnect must use the new bundle without a restart.
type caFileCredentials struct {
	caFile     string
	serverName string // "" : the host of the dialled address
}

// NewCAFileCredentials returns transport credentials that speak TLS (1.2
// or newer) and accept only a certificate signed by a CA in caFile (PEM,
// read on every handshake) and naming the host the client dials (the
// host of --control-plane). It fails when caFile holds no certificate
// now, so a wrong path is a start-up error.
func NewCAFileCredentials(caFile string) (credentials.TransportCredentials, error) {
	if _, err := readCAPool(caFile); err != nil {
		return nil, err
	}
	return &caFileCredentials{caFile: caFile}, nil
}

func readCAPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("control plane CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("control plane CA file %s: no PEM certificate in it", path)
	}
	return pool, nil
}

// ClientHandshake implements credentials.TransportCredentials. Its errors
// say which CA file and server name failed, next to crypto/tls's reason
// ("certificate signed by unknown authority", "certificate is valid for
// …, not …").
func (c *caFileCredentials) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	name := c.serverName
	if name == "" {
		host, _, err := net.SplitHostPort(authority)
		if err != nil {
			host = authority
		}
		name = host
	}
	pool, err := readCAPool(c.caFile)
	if err != nil {
		return nil, nil, err
	}
	tc := credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: name, MinVersion: tls.VersionTLS12})
	conn, info, err := tc.ClientHandshake(ctx, authority, raw)
	if err != nil {
		var herr x509.HostnameError
		var verr *tls.CertificateVerificationError
		switch {
		case errors.As(err, &herr):
			return nil, nil, fmt.Errorf("control plane TLS: the certificate does not name the server name %s (the host of --control-plane): %w", name, err)
		case errors.As(err, &verr):
			return nil, nil, fmt.Errorf("control plane TLS: the certificate of %s is not signed by a CA in %s: %w", name, c.caFile, err)
		}
		return nil, nil, fmt.Errorf("control plane TLS handshake with %q: %w", name, err)
	}
	return conn, info, nil
}

// ServerHandshake implements credentials.TransportCredentials; the edge
// is only a client.
func (c *caFileCredentials) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("control plane TLS: client credentials cannot serve")
}

// Info implements credentials.TransportCredentials.
func (c *caFileCredentials) Info() credentials.ProtocolInfo {
	// ServerName is deprecated, but grpc-go still takes the channel's authority from it.
	return credentials.ProtocolInfo{SecurityProtocol: "tls", ServerName: c.serverName} //nolint:staticcheck // SA1019, see above
}

// Clone implements credentials.TransportCredentials.
func (c *caFileCredentials) Clone() credentials.TransportCredentials {
	cp := *c
	return &cp
}

// OverrideServerName implements credentials.TransportCredentials
// (deprecated in gRPC, kept for the interface).
func (c *caFileCredentials) OverrideServerName(name string) error {
	c.serverName = name
	return nil
}
