package harness

// Certificates, keys, tokens and kubeconfigs of the apiservers the harness
// starts (StartKube, StartCluster).

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/rest"
)

// kubePKI is what writeKubePKI made: the CA of the serving certificate,
// the admin token and the tokens of pkiOptions.users by user name.
type kubePKI struct {
	caPEM      []byte
	adminToken string
	tokens     map[string]string
}

// pkiOptions adds to what every apiserver gets: more serving addresses,
// static token users (the components of a cluster), and a client
// certificate in system:masters for the apiserver's calls to kubelets
// (kubelet-client.crt/.key, signed by the CA that kubelets trust).
type pkiOptions struct {
	ips           []net.IP
	users         []tokenUser
	kubeletClient bool
}

// tokenUser is a line of the static token file.
type tokenUser struct{ name, groups string }

// writeKubePKI writes a CA, a serving certificate for 127.0.0.1 and the
// in-cluster names, the ServiceAccount signing key pair and the static
// token file to dir.
func writeKubePKI(dir string, opts pkiOptions) (kubePKI, error) {
	pki := kubePKI{tokens: map[string]string{}}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return pki, err
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "selfhost-test-kube-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return pki, err
	}
	if ca, err = x509.ParseCertificate(caDER); err != nil {
		return pki, err
	}
	servingKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return pki, err
	}
	serving := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1)}, opts.ips...),
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default",
			"kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
	}
	servingDER, err := x509.CreateCertificate(rand.Reader, serving, ca, &servingKey.PublicKey, caKey)
	if err != nil {
		return pki, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return pki, err
	}
	if pki.adminToken, err = newToken(); err != nil {
		return pki, err
	}
	// token,user,uid,"group,..."
	tokensCSV := pki.adminToken + ",selfhost-admin,selfhost-admin,system:masters\n"
	for _, u := range opts.users {
		tok, err := newToken()
		if err != nil {
			return pki, err
		}
		pki.tokens[u.name] = tok
		tokensCSV += fmt.Sprintf("%s,%s,%s,%q\n", tok, u.name, u.name, u.groups)
	}
	pki.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	files := []struct {
		name string
		data func() ([]byte, error)
	}{
		{"ca.crt", func() ([]byte, error) { return pki.caPEM, nil }},
		{"serving.crt", func() ([]byte, error) {
			return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: servingDER}), pki.caPEM...), nil
		}},
		{"serving.key", func() ([]byte, error) { return privateKeyPEM(servingKey) }},
		{"sa.key", func() ([]byte, error) { return privateKeyPEM(saKey) }},
		{"sa.pub", func() ([]byte, error) {
			der, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
			return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), err
		}},
		{"tokens.csv", func() ([]byte, error) { return []byte(tokensCSV), nil }},
	}
	if opts.kubeletClient {
		crt, key, err := clientCert(ca, caKey, "kube-apiserver-kubelet-client", "system:masters")
		if err != nil {
			return pki, fmt.Errorf("kubelet client certificate: %w", err)
		}
		files = append(files,
			struct {
				name string
				data func() ([]byte, error)
			}{"kubelet-client.crt", func() ([]byte, error) { return crt, nil }},
			struct {
				name string
				data func() ([]byte, error)
			}{"kubelet-client.key", func() ([]byte, error) { return key, nil }})
	}
	for _, f := range files {
		b, err := f.data()
		if err != nil {
			return pki, fmt.Errorf("%s: %w", f.name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.name), b, 0o600); err != nil {
			return pki, err
		}
	}
	return pki, nil
}

func newToken() (string, error) {
	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(tok), nil
}

// clientCert returns a PEM client certificate and key for cn in group org,
// signed by ca.
func clientCert(ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn, org string) (crt, key []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(3),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{org}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	if key, err = privateKeyPEM(k); err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key, nil
}

func privateKeyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// writeKubeconfig writes an admin kubeconfig (token and CA inline) for cfg.
func writeKubeconfig(path string, cfg *rest.Config) error {
	const tmpl = `apiVersion: v1
kind: Config
clusters:
- name: selfhost-test
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: selfhost-admin
  user:
    token: %s
contexts:
- name: selfhost-test
  context:
    cluster: selfhost-test
    user: selfhost-admin
    namespace: default
current-context: selfhost-test
`
	b := fmt.Sprintf(tmpl, cfg.Host, base64.StdEncoding.EncodeToString(cfg.CAData), cfg.BearerToken)
	return os.WriteFile(path, []byte(b), 0o600)
}
