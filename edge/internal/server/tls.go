package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// certCheckInterval bounds how often the certificate files are looked at:
// a Secret mounted by kubelet is replaced in place, and the edge must pick
// up a renewed certificate without a restart.
const certCheckInterval = 10 * time.Second

// servingCert serves the --tls-cert/--tls-key pair, re-read when either
// file changes.
type servingCert struct {
	certFile, keyFile string
	now               func() time.Time

	mu      sync.Mutex
	cert    *tls.Certificate
	mods    [2]time.Time
	checked time.Time
}

// newServingCert loads the pair once, so that a bad file fails the start.
func newServingCert(certFile, keyFile string) (*servingCert, error) {
	s := &servingCert{certFile: certFile, keyFile: keyFile, now: time.Now}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *servingCert) load() error {
	var mods [2]time.Time
	for i, f := range []string{s.certFile, s.keyFile} {
		st, err := os.Stat(f)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		mods[i] = st.ModTime()
	}
	if s.cert != nil && mods == s.mods {
		return nil
	}
	c, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		return fmt.Errorf("tls: load %s and %s: %w", s.certFile, s.keyFile, err)
	}
	s.cert, s.mods = &c, mods
	return nil
}

// get implements tls.Config.GetCertificate. A pair that fails to load
// after a change keeps the previous one in service.
func (s *servingCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := s.now(); now.Sub(s.checked) >= certCheckInterval {
		s.checked = now
		_ = s.load()
	}
	return s.cert, nil
}

// tlsListener wraps ln so that it serves TLS with the --tls-cert pair; ln
// unchanged without one.
func (cfg Config) tlsListener(ln net.Listener) (net.Listener, error) {
	switch {
	case cfg.TLSCert == "" && cfg.TLSKey == "":
		return ln, nil
	case cfg.TLSCert == "" || cfg.TLSKey == "":
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	sc, err := newServingCert(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, err
	}
	return tls.NewListener(ln, &tls.Config{GetCertificate: sc.get, MinVersion: tls.VersionTLS12}), nil
}
