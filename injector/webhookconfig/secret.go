package webhookconfig

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/certs"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

// Keys of the Secret next to corev1.TLSCertKey and corev1.TLSPrivateKeyKey
// (the serving certificate and its key).
const (
	KeyCACert = "ca.crt"
	KeyCAKey  = "ca.key"
	// KeyPreviousCA holds the CA replaced last, trusted in caBundle for
	// Options.CAOverlap after CARotatedAtAnnotation.
	KeyPreviousCA = "ca-previous.crt"
)

// CARotatedAtAnnotation on the Secret records, in RFC 3339, when the CA
// in KeyPreviousCA was replaced.
const CARotatedAtAnnotation = kubecontract.Domain + "/ca-rotated-at"

// maxAttempts bounds the read-modify-write loops that lose races to other
// replicas; each lost race means another replica wrote, so a few suffice.
const maxAttempts = 5

// tlsState is the parsed Secret.
type tlsState struct {
	bundle    *certs.Bundle
	previous  *x509.Certificate // nil when no CA was replaced recently
	rotatedAt time.Time
}

// ensureSecret reads the Secret and returns usable TLS material: it
// creates the Secret when missing, replaces what is unusable or due, and
// drops a previous CA whose overlap has passed. Several replicas may run
// it at once: every write carries the resourceVersion it read, and a
// replica that loses the race re-reads and uses the winner's material.
func (k *Keeper) ensureSecret(ctx context.Context) (*tlsState, error) {
	secrets := k.client.CoreV1().Secrets(k.opts.Namespace)
	for range maxAttempts {
		now := k.opts.Now()
		sec, err := secrets.Get(ctx, k.opts.SecretName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			st, err := k.generate(now, nil)
			if err != nil {
				return nil, err
			}
			sec, err := k.secretFor(st, nil)
			if err != nil {
				return nil, err
			}
			_, err = secrets.Create(ctx, sec, metav1.CreateOptions{})
			switch {
			case apierrors.IsAlreadyExists(err):
				continue // another replica won; use its Secret
			case err != nil:
				return nil, fmt.Errorf("create Secret %s/%s: %w", k.opts.Namespace, k.opts.SecretName, err)
			}
			k.log.Info("webhook TLS Secret created", "secret", k.secretRef(), "ca_expires", st.bundle.CA.Cert.NotAfter, "serving_expires", st.bundle.Serving.Cert.NotAfter)
			return st, nil
		}
		if err != nil {
			return nil, fmt.Errorf("get Secret %s: %w", k.secretRef(), err)
		}
		if sec.Type != corev1.SecretTypeTLS {
			// The type is immutable: replace the Secret.
			k.log.Warn("webhook TLS Secret has the wrong type; replacing it", "secret", k.secretRef(), "type", sec.Type)
			err := secrets.Delete(ctx, sec.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &sec.UID, ResourceVersion: &sec.ResourceVersion}})
			if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				return nil, fmt.Errorf("delete Secret %s of type %s: %w", k.secretRef(), sec.Type, err)
			}
			continue
		}
		st, change, err := k.review(sec, now)
		if err != nil {
			return nil, err
		}
		if change == "" {
			return st, nil
		}
		upd, err := k.secretFor(st, sec)
		if err != nil {
			return nil, err
		}
		_, err = secrets.Update(ctx, upd, metav1.UpdateOptions{})
		switch {
		case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
			continue // another replica wrote first; look at what it wrote
		case err != nil:
			return nil, fmt.Errorf("update Secret %s: %w", k.secretRef(), err)
		}
		k.log.Info("webhook TLS Secret updated", "secret", k.secretRef(), "change", change,
			"ca_expires", st.bundle.CA.Cert.NotAfter, "serving_expires", st.bundle.Serving.Cert.NotAfter, "previous_ca", st.previous != nil)
		return st, nil
	}
	return nil, fmt.Errorf("update Secret %s: still conflicting after %d attempts", k.secretRef(), maxAttempts)
}

// review parses sec and decides what to change; change says what (for the
// log) and is empty when the Secret is fine as it is.
func (k *Keeper) review(sec *corev1.Secret, now time.Time) (*tlsState, string, error) {
	ca, caField, caErr := parsePair(sec.Data, KeyCACert, KeyCAKey)
	serving, srvField, srvErr := parsePair(sec.Data, corev1.TLSCertKey, corev1.TLSPrivateKeyKey)
	st := &tlsState{bundle: &certs.Bundle{CA: ca, Serving: serving}}
	droppedPrevious := false
	if raw, ok := sec.Data[KeyPreviousCA]; ok {
		droppedPrevious = true
		prev, err := certs.ParseCertificates(raw)
		at, atErr := time.Parse(time.RFC3339, sec.Annotations[CARotatedAtAnnotation])
		switch {
		case err != nil || len(prev) != 1:
			k.log.Warn("webhook TLS Secret: dropping an unusable previous CA", "secret", k.secretRef(), "field", KeyPreviousCA, "error", err)
		case atErr != nil:
			k.log.Warn("webhook TLS Secret: dropping a previous CA with no valid rotation time", "secret", k.secretRef(), "field", "metadata.annotations["+CARotatedAtAnnotation+"]", "error", atErr)
		default:
			st.previous, st.rotatedAt, droppedPrevious = prev[0], at, false
		}
	}

	var rot certs.Rotation
	var reason string
	switch {
	case caErr != nil:
		k.log.Warn("webhook TLS Secret: unusable CA, making a new one", "secret", k.secretRef(), "field", caField, "error", caErr)
		rot, reason = certs.RotateCA, caField+" unusable"
	case srvErr != nil:
		k.log.Warn("webhook TLS Secret: unusable serving certificate, issuing a new one", "secret", k.secretRef(), "field", srvField, "error", srvErr)
		rot, reason = certs.RotateServing, srvField+" unusable"
	default:
		rot, reason = st.bundle.NeedsRotation(now, k.opts.Hosts, k.opts.Certs)
	}

	switch rot {
	case certs.RotateCA:
		// Keep trusting the CA being replaced (when its certificate is still
		// readable) while servers switch to the new serving certificate.
		old := oldCA(sec.Data, now)
		next, err := k.generate(now, old)
		if err != nil {
			return nil, "", err
		}
		return next, "new CA and serving certificate: " + reason, nil
	case certs.RotateServing:
		srv, err := certs.Issue(st.bundle.CA, now, k.opts.Hosts, k.opts.Certs)
		if err != nil {
			return nil, "", fmt.Errorf("issue serving certificate: %w", err)
		}
		st.bundle.Serving = srv
		k.dropExpiredPrevious(st, now)
		return st, "new serving certificate: " + reason, nil
	}
	switch {
	case droppedPrevious:
		return st, "unusable previous CA dropped", nil
	case k.dropExpiredPrevious(st, now):
		return st, "the previous CA's overlap is over; it leaves caBundle", nil
	}
	return st, "", nil
}

// dropExpiredPrevious forgets the previous CA once its overlap is over or
// it has expired; it tells whether it did.
func (k *Keeper) dropExpiredPrevious(st *tlsState, now time.Time) bool {
	if st.previous == nil || (now.Before(st.rotatedAt.Add(k.opts.CAOverlap)) && now.Before(st.previous.NotAfter)) {
		return false
	}
	st.previous, st.rotatedAt = nil, time.Time{}
	return true
}

// oldCA is the Secret's CA certificate if it parses and has not expired.
func oldCA(data map[string][]byte, now time.Time) *x509.Certificate {
	cs, err := certs.ParseCertificates(data[KeyCACert])
	if err != nil || len(cs) != 1 || !cs[0].IsCA || !now.Before(cs[0].NotAfter) {
		return nil
	}
	return cs[0]
}

// generate makes a new CA and serving certificate; previous is the CA
// they replace (nil: none).
func (k *Keeper) generate(now time.Time, previous *x509.Certificate) (*tlsState, error) {
	b, err := certs.Generate(now, k.opts.Hosts, k.opts.Certs)
	if err != nil {
		return nil, fmt.Errorf("generate webhook certificates: %w", err)
	}
	st := &tlsState{bundle: b}
	if previous != nil {
		st.previous, st.rotatedAt = previous, now
	}
	return st, nil
}

// parsePair decodes one certificate and its key from the Secret; on error
// it names the field at fault.
func parsePair(data map[string][]byte, certKey, keyKey string) (*certs.KeyPair, string, error) {
	cs, err := certs.ParseCertificates(data[certKey])
	switch {
	case err != nil:
		return nil, certKey, err
	case len(cs) != 1:
		return nil, certKey, fmt.Errorf("%w: %d certificates, want 1", certs.ErrInvalid, len(cs))
	}
	kp, err := certs.ParseKeyPair(data[certKey], data[keyKey])
	if err != nil {
		return nil, keyKey, err
	}
	return kp, "", nil
}

// secretFor encodes st into a Secret: a new one when base is nil, else a
// copy of base (keeping its resourceVersion, labels and annotations).
func (k *Keeper) secretFor(st *tlsState, base *corev1.Secret) (*corev1.Secret, error) {
	caKey, err := certs.EncodeKey(st.bundle.CA.Key)
	if err != nil {
		return nil, err
	}
	srvKey, err := certs.EncodeKey(st.bundle.Serving.Key)
	if err != nil {
		return nil, err
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: k.opts.SecretName, Namespace: k.opts.Namespace},
		Type:       corev1.SecretTypeTLS,
	}
	if base != nil {
		sec = base.DeepCopy()
	}
	if sec.Labels == nil {
		sec.Labels = map[string]string{}
	}
	for key, v := range ownLabels() {
		sec.Labels[key] = v
	}
	sec.Data = map[string][]byte{
		corev1.TLSCertKey:       certs.EncodeCertificates(st.bundle.Serving.Cert),
		corev1.TLSPrivateKeyKey: srvKey,
		KeyCACert:               certs.EncodeCertificates(st.bundle.CA.Cert),
		KeyCAKey:                caKey,
	}
	delete(sec.Annotations, CARotatedAtAnnotation)
	if st.previous != nil {
		sec.Data[KeyPreviousCA] = certs.EncodeCertificates(st.previous)
		if sec.Annotations == nil {
			sec.Annotations = map[string]string{}
		}
		sec.Annotations[CARotatedAtAnnotation] = st.rotatedAt.UTC().Format(time.RFC3339)
	}
	return sec, nil
}

// caBundle is what the API server must trust: the CA, and the previous one
// during its overlap.
func (k *Keeper) caBundle(st *tlsState) []byte {
	if st.previous != nil {
		return certs.EncodeCertificates(st.bundle.CA.Cert, st.previous)
	}
	return certs.EncodeCertificates(st.bundle.CA.Cert)
}

func (k *Keeper) secretRef() string { return k.opts.Namespace + "/" + k.opts.SecretName }

// ownLabels mark the Secret and the webhook configuration as the
// injector's.
func ownLabels() map[string]string {
	return map[string]string{
		kubecontract.ManagedByLabel: kubecontract.ManagedByValue,
		kubecontract.ComponentLabel: kubecontract.WebhookComponent,
	}
}

var errStale = errors.New("the webhook configuration trusts a newer CA than the Secret read")
