// Package webhookconfig runs the injector's webhook without cert-manager
// (injector/README.md). A Keeper, given a Kubernetes client:
//
//   - keeps a CA and a serving certificate (injector/certs) in a
//     kubernetes.io/tls Secret in the release namespace (tls.crt, tls.key,
//     ca.crt, ca.key, and ca-previous.crt during a CA rotation): created
//     when missing, rotated before expiry, regenerated when unreadable;
//   - hands the HTTPS server (and, in-cluster, the control plane's gRPC
//     server, whose names Options.ExtraHosts adds) the current
//     certificate through tls.Config.GetCertificate, reloaded from the
//     Secret every Interval, and publishes the CA bundle clients trust
//     (CABundle, Options.OnCABundle);
//   - creates the MutatingWebhookConfiguration and repairs any drift in it
//     (caBundle, rules, selectors, client config).
//
// Several control-plane replicas may run Keepers at once. Every write is a
// create or an update at the resourceVersion just read; the loser of a race
// re-reads and adopts the winner's certificates, so all replicas converge
// on one Secret. When the CA is replaced, caBundle trusts the new and the
// previous CA for Options.CAOverlap, and a replica starts presenting a
// certificate of the new CA only after caBundle trusts it and, when it was
// presenting one of the previous CA, CAPropagation later (API servers load
// caBundle asynchronously), so admissions keep working through the
// rotation. A replica that starts inside that window presents the new
// certificate at once.
package webhookconfig

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/kubernetes"
)

// ErrNoCertificate is returned by GetCertificate before the first
// successful Sync.
var ErrNoCertificate = errors.New("webhook serving certificate not loaded yet")

// Keeper maintains the webhook's TLS Secret and configuration and serves
// the current certificate. It is safe for concurrent use.
type Keeper struct {
	client kubernetes.Interface
	opts   Options
	log    *slog.Logger

	mu       sync.Mutex // serialises Sync; guards switchAt
	switchAt time.Time  // when a deferred switch to a new CA's certificate is due
	current  atomic.Pointer[tls.Certificate]
	bundle   atomic.Pointer[[]byte] // CABundle
}

// New validates opts and returns a Keeper; nothing is read or written
// before Sync or Run.
func New(client kubernetes.Interface, opts Options) (*Keeper, error) {
	if client == nil {
		return nil, fmt.Errorf("%w: client: required", ErrInvalidOptions)
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Keeper{
		client: client,
		opts:   opts,
		log:    opts.Logger.With("component", "webhookconfig"),
	}, nil
}

// Sync brings the Secret and the webhook configuration to their desired
// state once and loads the serving certificate. Run calls it every
// Interval; call it directly for an immediate repair.
func (k *Keeper) Sync(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	st, err := k.ensureSecret(ctx)
	if err != nil {
		return err
	}
	if k.opts.ConfigurationDisabled {
		k.load(st)
		return nil
	}
	err = k.ensureConfiguration(ctx, st, false)
	if errors.Is(err, errStale) {
		// Another replica rotated the CA between our read of the Secret and
		// of the configuration: read its Secret instead of rolling back.
		if st, err = k.ensureSecret(ctx); err != nil {
			return err
		}
		err = k.ensureConfiguration(ctx, st, true)
	}
	if err != nil {
		// Present a certificate the stored caBundle may not trust only when
		// there is nothing better: at start-up.
		if k.current.Load() == nil {
			k.current.Store(st.bundle.TLSCertificate())
		}
		return err
	}
	k.load(st)
	return nil
}

// load presents st's serving certificate, except right after a CA
// rotation: a replica presenting a still valid certificate of the previous
// CA keeps it for CAPropagation, because API servers load a new caBundle
// asynchronously and would refuse the new CA until they have.
func (k *Keeper) load(st *tlsState) {
	k.publishCABundle(st)
	next := st.bundle.Serving.Cert
	cur := k.current.Load()
	if cur != nil && cur.Leaf.Equal(next) {
		return
	}
	now := k.opts.Now()
	if cur != nil && st.previous != nil && cur.Leaf.CheckSignatureFrom(st.previous) == nil && now.Before(cur.Leaf.NotAfter) {
		if at := st.rotatedAt.Add(k.opts.CAPropagation); now.Before(at) {
			if k.switchAt.IsZero() {
				k.log.Info("webhook CA rotated; presenting the previous CA's certificate until the API servers trust the new one", "until", at)
			}
			k.switchAt = at
			return
		}
	}
	k.current.Store(st.bundle.TLSCertificate())
	k.switchAt = time.Time{}
	k.log.Info("webhook serving certificate loaded", "serial", next.SerialNumber.Text(16), "expires", next.NotAfter)
}

// publishCABundle keeps st's CA bundle for CABundle and tells
// Options.OnCABundle when it changed.
func (k *Keeper) publishCABundle(st *tlsState) {
	b := k.caBundle(st)
	if old := k.bundle.Load(); old != nil && bytes.Equal(*old, b) {
		return
	}
	k.bundle.Store(&b)
	if k.opts.OnCABundle != nil {
		k.opts.OnCABundle(b)
	}
}

// CABundle is the PEM bundle clients of the serving certificate trust:
// the CA, and the previous CA during a rotation's overlap; nil before the
// first successful Sync.
func (k *Keeper) CABundle() []byte {
	if b := k.bundle.Load(); b != nil {
		return *b
	}
	return nil
}

// nextSync is how long Run waits after a successful Sync: Interval, or
// less when a deferred switch is due sooner.
func (k *Keeper) nextSync() time.Duration {
	k.mu.Lock()
	defer k.mu.Unlock()
	wait := k.opts.Interval
	if !k.switchAt.IsZero() {
		wait = min(wait, max(k.switchAt.Sub(k.opts.Now()), 0)+10*time.Millisecond)
	}
	return wait
}

// Run syncs at once and then every Interval until ctx ends; a failed sync
// is logged and retried sooner, with backoff up to Interval. It returns
// nil when ctx ends.
func (k *Keeper) Run(ctx context.Context) error {
	const firstRetry = time.Second
	retry := firstRetry
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		var wait time.Duration
		if err := k.Sync(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			wait = min(retry, k.opts.Interval)
			retry = min(2*retry, k.opts.Interval)
			k.log.Error("webhook TLS and configuration sync failed", "error", err, "retry_in", wait)
		} else {
			wait, retry = k.nextSync(), firstRetry
		}
		timer.Reset(wait)
	}
}

// GetCertificate implements tls.Config.GetCertificate with the current
// serving certificate.
func (k *Keeper) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := k.current.Load(); c != nil {
		return c, nil
	}
	return nil, ErrNoCertificate
}

// TLSConfig is a server configuration presenting the current certificate.
func (k *Keeper) TLSConfig() *tls.Config {
	return &tls.Config{GetCertificate: k.GetCertificate, MinVersion: tls.VersionTLS12}
}
