package configmapstate

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

// getSecret reads the credentials Secret; nil without error when there is
// none.
func (s *StateStore) getSecret(ctx context.Context) (*corev1.Secret, error) {
	sec, err := s.client.CoreV1().Secrets(s.opts.Namespace).Get(ctx, s.opts.SecretName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("get Secret %s: %w", s.opts.SecretName, err)
	}
	return sec, nil
}

// credentials are sec's credentials by prefix; none when sec is nil or
// unreadable (logged: the upstreams then go without credentials rather
// than the control plane without configuration).
func (s *StateStore) credentials(sec *corev1.Secret) map[string]credentialEntry {
	if sec == nil {
		return nil
	}
	creds, err := decodeCredentials(sec.Data[DefaultSecretKey])
	if err != nil {
		s.log.Warn("credentials Secret unreadable; upstreams go without the credentials it should hold", "err", err)
		return nil
	}
	return creds
}

// writeSecret makes the Secret hold exactly creds, with optimistic
// concurrency like the ConfigMap; it returns the Secret as written (nil
// when there is none and none is needed). Called with s.mu held.
func (s *StateStore) writeSecret(ctx context.Context, creds map[string]credentialEntry) (*corev1.Secret, error) {
	body, err := encodeCredentials(creds)
	if err != nil {
		return nil, err
	}
	api := s.client.CoreV1().Secrets(s.opts.Namespace)
	var lastErr error
	for attempt := 1; attempt <= s.opts.MaxAttempts; attempt++ {
		cur := s.sec
		if cur == nil {
			if cur, err = s.getSecret(ctx); err != nil {
				return nil, err
			}
		}
		if cur == nil {
			if len(creds) == 0 {
				return nil, nil
			}
			created, err := api.Create(ctx, s.newSecret(body), metav1.CreateOptions{})
			switch {
			case apierrors.IsAlreadyExists(err):
				lastErr = err // another replica created it first
				continue
			case err != nil:
				return nil, fmt.Errorf("create Secret %s: %w", s.opts.SecretName, err)
			}
			s.log.Info("credentials Secret created")
			s.sec = created
			return created, nil
		}
		if string(cur.Data[DefaultSecretKey]) == string(body) {
			s.sec = cur
			return cur, nil
		}
		next := cur.DeepCopy()
		if next.Data == nil {
			next.Data = map[string][]byte{}
		}
		next.Data[DefaultSecretKey] = body
		updated, err := api.Update(ctx, next, metav1.UpdateOptions{})
		switch {
		case err == nil:
			s.sec = updated
			return updated, nil
		case apierrors.IsConflict(err), apierrors.IsNotFound(err):
			s.log.Info("credentials Secret changed by another writer during a write; retrying over it", "attempt", attempt, "err", err)
			s.sec, lastErr = nil, err
		default:
			return nil, fmt.Errorf("update Secret %s: %w", s.opts.SecretName, err)
		}
	}
	return nil, fmt.Errorf("%w (%d attempts): %w", ErrConflict, s.opts.MaxAttempts, lastErr)
}

func (s *StateStore) newSecret(body []byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      s.opts.SecretName,
			Namespace: s.opts.Namespace,
			Labels: map[string]string{
				kubecontract.ManagedByLabel: kubecontract.ManagedByValue,
				kubecontract.ComponentLabel: SecretComponentValue,
			},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{DefaultSecretKey: body},
	}
}
