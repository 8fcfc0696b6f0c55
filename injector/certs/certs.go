// Package certs is the pure crypto behind the webhook's TLS without
// cert-manager: an ECDSA P-256 CA, a serving certificate for
// a list of DNS names and IPs signed by it, the decision when either must
// be replaced, and PEM encoding with errors that say what is wrong. It
// touches no clock, network or Kubernetes API: callers pass the time in.
package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"slices"
	"strings"
	"time"
)

// ErrInvalid is wrapped by every error about unusable input: PEM that does
// not decode, keys that do not match, host names that cannot be SANs.
var ErrInvalid = errors.New("invalid certificate material")

// Defaults of the Options.
const (
	DefaultCAValidity      = 365 * 24 * time.Hour
	DefaultServingValidity = 90 * 24 * time.Hour
	DefaultCARenewBefore   = 30 * 24 * time.Hour
	DefaultCACommonName    = "k8s-selfhost-repo injector CA"
)

// backdate is how far NotBefore lies in the past, so a peer whose clock is
// a little behind still accepts a certificate issued just now.
const backdate = 5 * time.Minute

// Options tune lifetimes. The zero value means the defaults.
type Options struct {
	// CAValidity is the CA's lifetime (default one year).
	CAValidity time.Duration
	// ServingValidity is the serving certificate's lifetime (default 90
	// days); it never outlives its CA.
	ServingValidity time.Duration
	// CARenewBefore: the CA is replaced when less than this is left
	// (default 30 days).
	CARenewBefore time.Duration
	// CACommonName is the CA's subject (default DefaultCACommonName).
	CACommonName string
	// Rand is the entropy source (default crypto/rand).
	Rand io.Reader
}

func (o Options) withDefaults() Options {
	if o.CAValidity <= 0 {
		o.CAValidity = DefaultCAValidity
	}
	if o.ServingValidity <= 0 {
		o.ServingValidity = DefaultServingValidity
	}
	if o.CARenewBefore <= 0 {
		o.CARenewBefore = DefaultCARenewBefore
	}
	if o.CACommonName == "" {
		o.CACommonName = DefaultCACommonName
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	return o
}

// KeyPair is a certificate and its private key.
type KeyPair struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// Bundle is a CA and the serving certificate it signed.
type Bundle struct {
	CA      *KeyPair
	Serving *KeyPair
}

// Generate makes a new CA and a serving certificate for hosts.
func Generate(now time.Time, hosts []string, opts Options) (*Bundle, error) {
	ca, err := NewCA(now, opts)
	if err != nil {
		return nil, err
	}
	serving, err := Issue(ca, now, hosts, opts)
	if err != nil {
		return nil, err
	}
	return &Bundle{CA: ca, Serving: serving}, nil
}

// NewCA makes a self-signed ECDSA P-256 CA valid from now for
// opts.CAValidity.
func NewCA(now time.Time, opts Options) (*KeyPair, error) {
	opts = opts.withDefaults()
	key, err := ecdsa.GenerateKey(elliptic.P256(), opts.Rand)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := serialNumber(opts.Rand)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: opts.CACommonName},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(opts.CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	return sign(tmpl, tmpl, key, key, opts.Rand)
}

// Issue makes a serving certificate for hosts (DNS names and IP
// addresses), signed by ca, valid from now for opts.ServingValidity but
// never past the CA's end.
func Issue(ca *KeyPair, now time.Time, hosts []string, opts Options) (*KeyPair, error) {
	opts = opts.withDefaults()
	dns, ips, err := splitHosts(hosts)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), opts.Rand)
	if err != nil {
		return nil, fmt.Errorf("generate serving key: %w", err)
	}
	serial, err := serialNumber(opts.Rand)
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(opts.ServingValidity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: commonName(hosts[0])},
		DNSNames:     dns,
		IPAddresses:  ips,
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	return sign(tmpl, ca.Cert, key, ca.Key, opts.Rand)
}

// commonName: clients match SANs only, and some tools refuse a subject
// common name over 64 characters.
func commonName(host string) string {
	if len(host) > 64 {
		return host[:64]
	}
	return host
}

// sign creates the certificate for key, signed by signer (key itself for
// a self-signed CA).
func sign(tmpl, parent *x509.Certificate, key, signer *ecdsa.PrivateKey, r io.Reader) (*KeyPair, error) {
	der, err := x509.CreateCertificate(r, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return nil, fmt.Errorf("create certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	return &KeyPair{Cert: cert, Key: key}, nil
}

func serialNumber(r io.Reader) (*big.Int, error) {
	n, err := rand.Int(r, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// splitHosts sorts hosts into SANs: DNS names (lower-cased) and IP
// addresses, each sorted, without duplicates.
func splitHosts(hosts []string) ([]string, []net.IP, error) {
	if len(hosts) == 0 {
		return nil, nil, fmt.Errorf("%w: hosts: at least one DNS name or IP address", ErrInvalid)
	}
	var dns []string
	var ips []net.IP
	for i, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
			continue
		}
		if h == "" || len(h) > 253 || strings.ContainsAny(h, " /:@\t\n") {
			return nil, nil, fmt.Errorf("%w: hosts[%d] %q: not a DNS name or IP address", ErrInvalid, i, h)
		}
		dns = append(dns, strings.ToLower(h))
	}
	slices.Sort(dns)
	slices.SortFunc(ips, func(a, b net.IP) int { return strings.Compare(a.String(), b.String()) })
	return slices.Compact(dns), ips, nil
}

// Rotation says what must be replaced.
type Rotation int

// Rotations, from nothing to everything.
const (
	// RotateNone: both certificates are good.
	RotateNone Rotation = iota
	// RotateServing: issue a new serving certificate from the same CA.
	RotateServing
	// RotateCA: make a new CA and a new serving certificate.
	RotateCA
)

func (r Rotation) String() string {
	switch r {
	case RotateNone:
		return "none"
	case RotateServing:
		return "serving"
	case RotateCA:
		return "ca"
	}
	return fmt.Sprintf("Rotation(%d)", int(r))
}

// NeedsRotation decides, at now, whether b serves hosts long enough: the
// CA is replaced when it has less than opts.CARenewBefore left; the
// serving certificate when it has less than a third of its lifetime left,
// is not valid yet, names other hosts, or was not signed by the CA. The
// reason is for logs.
func (b *Bundle) NeedsRotation(now time.Time, hosts []string, opts Options) (Rotation, string) {
	opts = opts.withDefaults()
	ca, srv := b.CA.Cert, b.Serving.Cert
	switch {
	case !ca.IsCA:
		return RotateCA, "the CA certificate is not a CA"
	case ca.NotAfter.Sub(now) < opts.CARenewBefore:
		return RotateCA, fmt.Sprintf("the CA expires at %s, less than %s from now", ca.NotAfter.UTC().Format(time.RFC3339), opts.CARenewBefore)
	case srv.CheckSignatureFrom(ca) != nil:
		return RotateServing, "the serving certificate was not signed by the CA"
	case now.Before(srv.NotBefore):
		return RotateServing, fmt.Sprintf("the serving certificate is not valid before %s", srv.NotBefore.UTC().Format(time.RFC3339))
	case srv.NotAfter.Sub(now) < srv.NotAfter.Sub(srv.NotBefore)/3:
		return RotateServing, fmt.Sprintf("the serving certificate expires at %s, with less than a third of its lifetime left", srv.NotAfter.UTC().Format(time.RFC3339))
	case !SameHosts(srv, hosts):
		return RotateServing, fmt.Sprintf("the serving certificate names %s, want %s", strings.Join(Hosts(srv), ","), strings.Join(hosts, ","))
	}
	return RotateNone, ""
}

// Hosts lists a certificate's SANs: DNS names, then IP addresses, each
// sorted.
func Hosts(c *x509.Certificate) []string {
	dns := slices.Clone(c.DNSNames)
	slices.Sort(dns)
	return append(dns, ipStrings(c.IPAddresses)...)
}

// SameHosts tells whether c's SANs are exactly hosts, in any order.
func SameHosts(c *x509.Certificate, hosts []string) bool {
	dns, ips, err := splitHosts(hosts)
	return err == nil && slices.Equal(Hosts(c), append(dns, ipStrings(ips)...))
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	slices.Sort(out)
	return out
}

// TLSCertificate is the serving certificate for tls.Config.
func (b *Bundle) TLSCertificate() *tls.Certificate {
	return &tls.Certificate{
		Certificate: [][]byte{b.Serving.Cert.Raw},
		PrivateKey:  b.Serving.Key,
		Leaf:        b.Serving.Cert,
	}
}

// EncodeCertificates PEM-encodes certificates, in order.
func EncodeCertificates(certs ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}) // writes to memory
	}
	return b.Bytes()
}

// EncodeKey PEM-encodes an ECDSA key as "EC PRIVATE KEY" (SEC 1).
func EncodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// ParseCertificates decodes one or more PEM certificates; anything else in
// the input is an error.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := bytes.TrimSpace(data)
	for len(rest) > 0 {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		switch {
		case block == nil:
			return nil, fmt.Errorf("%w: not PEM", ErrInvalid)
		case block.Type != "CERTIFICATE":
			return nil, fmt.Errorf("%w: PEM block %q, want CERTIFICATE", ErrInvalid, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		out = append(out, c)
		rest = bytes.TrimSpace(rest)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrInvalid)
	}
	return out, nil
}

// ParseKey decodes one PEM ECDSA private key, SEC 1 or PKCS #8.
func ParseKey(data []byte) (*ecdsa.PrivateKey, error) {
	block, rest := pem.Decode(bytes.TrimSpace(data))
	switch {
	case block == nil:
		return nil, fmt.Errorf("%w: not PEM", ErrInvalid)
	case len(bytes.TrimSpace(rest)) > 0:
		return nil, fmt.Errorf("%w: more than one PEM block", ErrInvalid)
	}
	switch block.Type {
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		return k, nil
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		ec, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%w: %T key, want ECDSA", ErrInvalid, k)
		}
		return ec, nil
	}
	return nil, fmt.Errorf("%w: PEM block %q, want EC PRIVATE KEY or PRIVATE KEY", ErrInvalid, block.Type)
}

// ParseKeyPair decodes one certificate and its key and checks that they
// belong together.
func ParseKeyPair(certPEM, keyPEM []byte) (*KeyPair, error) {
	certs, err := ParseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("certificate: %w: %d certificates, want 1", ErrInvalid, len(certs))
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	if pub, ok := certs[0].PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, fmt.Errorf("key: %w: does not match the certificate", ErrInvalid)
	}
	return &KeyPair{Cert: certs[0], Key: key}, nil
}
