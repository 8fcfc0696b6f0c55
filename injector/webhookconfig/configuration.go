package webhookconfig

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/certs"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

// desired returns the MutatingWebhookConfiguration the Keeper maintains,
// trusting caBundle (PEM). Every field the API server would default is set,
// so what is stored compares equal to it and repairs happen only on drift.
func (k *Keeper) desired(caBundle []byte) *admissionregistrationv1.MutatingWebhookConfiguration {
	var (
		namespaced         = admissionregistrationv1.NamespacedScope
		ignore             = admissionregistrationv1.Ignore
		equivalent         = admissionregistrationv1.Equivalent
		sideEffectsNone    = admissionregistrationv1.SideEffectClassNone
		reinvokeIfNeeded   = admissionregistrationv1.IfNeededReinvocationPolicy
		timeout            = k.opts.TimeoutSeconds
		excludedNamespaces = []string{metav1.NamespaceSystem}
	)
	if k.opts.Namespace != metav1.NamespaceSystem {
		excludedNamespaces = append(excludedNamespaces, k.opts.Namespace)
	}
	slices.Sort(excludedNamespaces)
	cc := admissionregistrationv1.WebhookClientConfig{CABundle: caBundle}
	if svc := k.opts.Service; svc != nil {
		port, path := svc.Port, svc.Path
		cc.Service = &admissionregistrationv1.ServiceReference{Namespace: k.opts.Namespace, Name: svc.Name, Path: &path, Port: &port}
	} else {
		u := k.opts.URL
		cc.URL = &u
	}
	pods := func(op admissionregistrationv1.OperationType, resource string) admissionregistrationv1.RuleWithOperations {
		return admissionregistrationv1.RuleWithOperations{
			Operations: []admissionregistrationv1.OperationType{op},
			Rule: admissionregistrationv1.Rule{
				APIGroups:   []string{""},
				APIVersions: []string{"v1"},
				Resources:   []string{resource},
				Scope:       &namespaced,
			},
		}
	}
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: k.opts.ConfigurationName, Labels: ownLabels()},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:         k.opts.WebhookName,
			ClientConfig: cc,
			Rules: []admissionregistrationv1.RuleWithOperations{
				pods(admissionregistrationv1.Create, "pods"),
				// kubectl debug: rewrite the images of new ephemeral containers.
				pods(admissionregistrationv1.Update, "pods/ephemeralcontainers"),
			},
			FailurePolicy: &ignore,
			MatchPolicy:   &equivalent,
			NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{kubecontract.OptInLabel: kubecontract.OptInValue},
				MatchExpressions: []metav1.LabelSelectorRequirement{{
					Key:      corev1.LabelMetadataName,
					Operator: metav1.LabelSelectorOpNotIn,
					Values:   excludedNamespaces,
				}},
			},
			// Everything the control plane creates, the edges' pods first,
			// carries the managed-by label; a pod cannot pull from its own
			// edge. ComponentLabel alone is too common a label to key on.
			ObjectSelector: &metav1.LabelSelector{
				MatchExpressions: []metav1.LabelSelectorRequirement{{
					Key:      kubecontract.ManagedByLabel,
					Operator: metav1.LabelSelectorOpNotIn,
					Values:   []string{kubecontract.ManagedByValue},
				}},
			},
			SideEffects:             &sideEffectsNone,
			TimeoutSeconds:          &timeout,
			AdmissionReviewVersions: []string{"v1"},
			ReinvocationPolicy:      &reinvokeIfNeeded,
		}},
	}
}

// ensureConfiguration creates the MutatingWebhookConfiguration or repairs
// drift in it. It returns errStale when the stored caBundle trusts a CA
// newer than the Secret the caller read (another replica rotated in
// between): the caller re-reads the Secret rather than roll the bundle
// back.
func (k *Keeper) ensureConfiguration(ctx context.Context, st *tlsState, allowRollback bool) error {
	mwcs := k.client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	desired := k.desired(k.caBundle(st))
	for range maxAttempts {
		cur, err := mwcs.Get(ctx, desired.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = mwcs.Create(ctx, desired, metav1.CreateOptions{})
			switch {
			case apierrors.IsAlreadyExists(err):
				continue
			case err != nil:
				return fmt.Errorf("create MutatingWebhookConfiguration %s: %w", desired.Name, err)
			}
			k.log.Info("webhook configuration created", "name", desired.Name)
			return nil
		}
		if err != nil {
			return fmt.Errorf("get MutatingWebhookConfiguration %s: %w", desired.Name, err)
		}
		drift := driftOf(cur, desired)
		if drift == "" {
			return nil
		}
		if !allowRollback && trustsNewerCA(cur, st) {
			return errStale
		}
		upd := cur.DeepCopy()
		upd.Webhooks = desired.Webhooks
		if upd.Labels == nil {
			upd.Labels = map[string]string{}
		}
		for key, v := range desired.Labels {
			upd.Labels[key] = v
		}
		_, err = mwcs.Update(ctx, upd, metav1.UpdateOptions{})
		switch {
		case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
			continue
		case err != nil:
			return fmt.Errorf("update MutatingWebhookConfiguration %s: %w", desired.Name, err)
		}
		k.log.Info("webhook configuration repaired", "name", desired.Name, "drift", drift)
		return nil
	}
	return fmt.Errorf("update MutatingWebhookConfiguration %s: still conflicting after %d attempts", desired.Name, maxAttempts)
}

// driftOf names what differs between the stored configuration and the
// desired one; "" when nothing does.
func driftOf(cur, desired *admissionregistrationv1.MutatingWebhookConfiguration) string {
	for key, v := range desired.Labels {
		if cur.Labels[key] != v {
			return "labels"
		}
	}
	if len(cur.Webhooks) != len(desired.Webhooks) {
		return fmt.Sprintf("%d webhooks, want %d", len(cur.Webhooks), len(desired.Webhooks))
	}
	got, want := cur.Webhooks[0], desired.Webhooks[0]
	switch {
	case !bytes.Equal(got.ClientConfig.CABundle, want.ClientConfig.CABundle):
		return "caBundle"
	case !equality.Semantic.DeepEqual(got.ClientConfig, want.ClientConfig):
		return "clientConfig"
	case !equality.Semantic.DeepEqual(got.Rules, want.Rules):
		return "rules"
	case !equality.Semantic.DeepEqual(got.NamespaceSelector, want.NamespaceSelector):
		return "namespaceSelector"
	case !equality.Semantic.DeepEqual(got.ObjectSelector, want.ObjectSelector):
		return "objectSelector"
	case !equality.Semantic.DeepEqual(got, want):
		return "webhook " + want.Name
	}
	return ""
}

// trustsNewerCA tells whether cur's caBundle holds a CA issued
// after the newest CA in st: then st was read before another replica's
// rotation.
func trustsNewerCA(cur *admissionregistrationv1.MutatingWebhookConfiguration, st *tlsState) bool {
	if len(cur.Webhooks) == 0 {
		return false
	}
	stored, err := certs.ParseCertificates(cur.Webhooks[0].ClientConfig.CABundle)
	if err != nil {
		return false
	}
	for _, c := range stored {
		if c.NotBefore.After(st.bundle.CA.Cert.NotBefore) && !c.Equal(st.bundle.CA.Cert) {
			return true
		}
	}
	return false
}
