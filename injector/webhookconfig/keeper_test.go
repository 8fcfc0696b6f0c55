package webhookconfig

import (
	"bytes"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/certs"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

func TestOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		edit  func(o *Options)
		field string
	}{
		{"no namespace", func(o *Options) { o.Namespace = "" }, "Namespace"},
		{"namespace not a label", func(o *Options) { o.Namespace = "a.b" }, "Namespace"},
		{"bad secret name", func(o *Options) { o.SecretName = "Secret!" }, "SecretName"},
		{"bad configuration name", func(o *Options) { o.ConfigurationName = "-x" }, "ConfigurationName"},
		{"webhook name not qualified", func(o *Options) { o.WebhookName = "pods" }, "WebhookName"},
		{"neither service nor URL", func(o *Options) { o.URL = "" }, "Service"},
		{"both service and URL", func(o *Options) { o.Service = &Service{Name: "injector"} }, "URL"},
		{"URL over http", func(o *Options) { o.URL = "http://127.0.0.1:8443/mutate-pods" }, "URL"},
		{"URL with query", func(o *Options) { o.URL = testURL + "?x=1" }, "URL"},
		{"URL with user", func(o *Options) { o.URL = "https://u:p@127.0.0.1/x" }, "URL"},
		{"service name", func(o *Options) { o.URL, o.Service = "", &Service{Name: "Injector"} }, "Service.Name"},
		{"service port", func(o *Options) { o.URL, o.Service = "", &Service{Name: "injector", Port: 70000} }, "Service.Port"},
		{"service path", func(o *Options) { o.URL, o.Service = "", &Service{Name: "injector", Path: "mutate"} }, "Service.Path"},
		{"timeout too long", func(o *Options) { o.TimeoutSeconds = 31 }, "TimeoutSeconds"},
		{"negative timeout", func(o *Options) { o.TimeoutSeconds = -1 }, "TimeoutSeconds"},
		{"negative interval", func(o *Options) { o.Interval = -time.Second }, "Interval"},
		{"negative propagation", func(o *Options) { o.CAPropagation = -time.Second }, "CAPropagation"},
		{"overlap shorter than interval", func(o *Options) { o.Interval, o.CAOverlap = time.Hour, time.Minute }, "CAOverlap"},
		{"renew before longer than validity", func(o *Options) { o.Certs = certs.Options{CAValidity: day, CARenewBefore: 2 * day} }, "Certs.CARenewBefore"},
		{"bad host", func(o *Options) { o.Hosts = []string{"injector", "a b"} }, "Hosts[1]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := Options{Namespace: release, URL: testURL}
			tc.edit(&opts)
			_, err := New(newClient(), opts)
			if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), ": "+tc.field+":") {
				t.Fatalf("New = %v, want ErrInvalidOptions naming %s", err, tc.field)
			}
		})
	}
	if _, err := New(nil, Options{Namespace: release, URL: testURL}); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("New(nil client) = %v", err)
	}
}

func TestDefaultHosts(t *testing.T) {
	t.Parallel()
	k := newKeeper(t, newClient(), newClock(), nil, func(o *Options) { o.URL, o.Service = "", &Service{Name: "injector"} })
	if got := strings.Join(k.opts.Hosts, ","); got != "injector,injector.selfhost-system,injector.selfhost-system.svc" {
		t.Errorf("service hosts %s", got)
	}
	if k.opts.Service.Port != 443 || k.opts.Service.Path != "/mutate-pods" || k.opts.CAOverlap != DefaultCAOverlap {
		t.Errorf("defaults: %+v, overlap %s", *k.opts.Service, k.opts.CAOverlap)
	}
	k = newKeeper(t, newClient(), newClock(), nil, func(o *Options) { o.URL = "https://[::1]:9443/x" })
	if got := strings.Join(k.opts.Hosts, ","); got != "::1" {
		t.Errorf("URL hosts %s", got)
	}
}

// TestCreate: from nothing, one Sync makes the Secret and the webhook
// configuration, and the presented certificate is trusted by caBundle.
func TestCreate(t *testing.T) {
	t.Parallel()
	cs, c := newClient(), newClock()
	k := newKeeper(t, cs, c, nil)
	if _, err := k.GetCertificate(nil); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("GetCertificate before Sync = %v", err)
	}
	sync1(t, k)

	sec := getSecret(t, cs)
	if sec.Type != corev1.SecretTypeTLS || sec.Labels[kubecontract.ComponentLabel] != kubecontract.WebhookComponent || sec.Labels[kubecontract.ManagedByLabel] != kubecontract.ManagedByValue {
		t.Fatalf("Secret type %s labels %v", sec.Type, sec.Labels)
	}
	for _, key := range []string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey, KeyCACert, KeyCAKey} {
		if len(sec.Data[key]) == 0 {
			t.Errorf("Secret has no %s", key)
		}
	}
	if _, ok := sec.Data[KeyPreviousCA]; ok {
		t.Errorf("a fresh Secret has a previous CA")
	}

	cfg := getConfig(t, cs)
	if len(cfg.Webhooks) != 1 {
		t.Fatalf("%d webhooks", len(cfg.Webhooks))
	}
	w := cfg.Webhooks[0]
	checks := []struct {
		what string
		ok   bool
	}{
		{"name", w.Name == DefaultWebhookName},
		{"labels", cfg.Labels[kubecontract.ComponentLabel] == kubecontract.WebhookComponent},
		{"url", w.ClientConfig.URL != nil && *w.ClientConfig.URL == testURL && w.ClientConfig.Service == nil},
		{"caBundle = ca.crt", bytes.Equal(w.ClientConfig.CABundle, sec.Data[KeyCACert])},
		{"failurePolicy Ignore", *w.FailurePolicy == admissionregistrationv1.Ignore},
		{"sideEffects None", *w.SideEffects == admissionregistrationv1.SideEffectClassNone},
		{"reinvocationPolicy IfNeeded", *w.ReinvocationPolicy == admissionregistrationv1.IfNeededReinvocationPolicy},
		{"timeoutSeconds 5", *w.TimeoutSeconds == 5},
		{"admissionReviewVersions v1", len(w.AdmissionReviewVersions) == 1 && w.AdmissionReviewVersions[0] == "v1"},
		{"CREATE pods", len(w.Rules) == 2 && w.Rules[0].Operations[0] == admissionregistrationv1.Create && w.Rules[0].Resources[0] == "pods"},
		{"UPDATE pods/ephemeralcontainers", w.Rules[1].Operations[0] == admissionregistrationv1.Update && w.Rules[1].Resources[0] == "pods/ephemeralcontainers"},
		{"opt-in label", w.NamespaceSelector.MatchLabels[kubecontract.OptInLabel] == kubecontract.OptInValue},
		{"kube-system and release namespace excluded", w.NamespaceSelector.MatchExpressions[0].Key == corev1.LabelMetadataName &&
			w.NamespaceSelector.MatchExpressions[0].Operator == metav1.LabelSelectorOpNotIn &&
			strings.Join(w.NamespaceSelector.MatchExpressions[0].Values, ",") == "kube-system,"+release},
		{"edge pods excluded", w.ObjectSelector.MatchExpressions[0].Key == kubecontract.ManagedByLabel &&
			w.ObjectSelector.MatchExpressions[0].Operator == metav1.LabelSelectorOpNotIn &&
			w.ObjectSelector.MatchExpressions[0].Values[0] == kubecontract.ManagedByValue},
	}
	for _, ch := range checks {
		if !ch.ok {
			t.Errorf("webhook configuration: %s wrong: %+v", ch.what, w)
		}
	}
	if err := verifies(served(t, k), bundleOf(t, cfg), "127.0.0.1", c.Now()); err != nil {
		t.Fatalf("served certificate not trusted by caBundle: %v", err)
	}

	// Nothing to do the second time: no writes.
	before := writes(cs)
	sync1(t, k)
	if n := writes(cs) - before; n != 0 {
		t.Fatalf("second Sync wrote %d times", n)
	}
}

func TestServiceClientConfig(t *testing.T) {
	t.Parallel()
	cs, c := newClient(), newClock()
	k := newKeeper(t, cs, c, nil, func(o *Options) {
		o.URL, o.Service, o.TimeoutSeconds = "", &Service{Name: "injector", Port: 8443}, 3
	})
	sync1(t, k)
	w := getConfig(t, cs).Webhooks[0]
	svc := w.ClientConfig.Service
	if w.ClientConfig.URL != nil || svc == nil || svc.Namespace != release || svc.Name != "injector" || *svc.Port != 8443 || *svc.Path != "/mutate-pods" || *w.TimeoutSeconds != 3 {
		t.Fatalf("client config %+v timeout %d", w.ClientConfig, *w.TimeoutSeconds)
	}
	if err := verifies(served(t, k), bundleOf(t, getConfig(t, cs)), "injector.selfhost-system.svc", c.Now()); err != nil {
		t.Fatalf("served certificate not valid for the name the API server checks: %v", err)
	}
}

// TestRotation walks a year: the serving certificate is renewed with a
// third of its life left; the CA with 30 days left, when caBundle trusts
// both CAs for CAOverlap so the old serving certificate keeps working.
func TestRotation(t *testing.T) {
	t.Parallel()
	cs, c, k, logs := syncedKeeper(t)
	ca1, srv1 := bundleOf(t, getConfig(t, cs))[0], served(t, k)

	c.Set(t0.Add(59 * day))
	sync1(t, k)
	if !served(t, k).Equal(srv1) {
		t.Fatalf("serving certificate renewed with more than a third of its life left")
	}

	c.Set(t0.Add(61 * day))
	sync1(t, k)
	srv2 := served(t, k)
	bundle := bundleOf(t, getConfig(t, cs))
	if srv2.Equal(srv1) || len(bundle) != 1 || !bundle[0].Equal(ca1) {
		t.Fatalf("after 61 days: serving renewed %v, bundle of %d (same CA %v)", !srv2.Equal(srv1), len(bundle), bundle[0].Equal(ca1))
	}
	if !strings.Contains(logs.String(), "new serving certificate") {
		t.Errorf("no log of the renewal:\n%s", logs.String())
	}

	// 31 days before the CA ends the serving certificate has been renewed
	// (clamped to the CA's end); 29 days before, the CA is replaced.
	c.Set(ca1.NotAfter.Add(-31 * day))
	sync1(t, k)
	srv2 = served(t, k)
	if n := len(bundleOf(t, getConfig(t, cs))); n != 1 || !srv2.NotAfter.Equal(ca1.NotAfter) {
		t.Fatalf("31 days before the CA ends: %d CAs, serving until %s (CA until %s)", n, srv2.NotAfter, ca1.NotAfter)
	}
	rotateAt := ca1.NotAfter.Add(-29 * day)
	c.Set(rotateAt)
	sync1(t, k)
	if !served(t, k).Equal(srv2) {
		t.Fatalf("a certificate of the new CA presented before the API servers can have loaded caBundle")
	}
	if wait := k.nextSync(); wait > DefaultCAPropagation+time.Second {
		t.Errorf("next sync in %s, want the switch within CAPropagation", wait)
	}
	c.Set(rotateAt.Add(DefaultCAPropagation))
	sync1(t, k)
	srv3 := served(t, k)
	if srv3.Equal(srv2) {
		t.Fatalf("still presenting the previous CA's certificate after CAPropagation")
	}
	bundle = bundleOf(t, getConfig(t, cs))
	if len(bundle) != 2 || bundle[0].Equal(ca1) || !bundle[1].Equal(ca1) {
		t.Fatalf("during the CA rotation caBundle holds %d CAs, want new then old", len(bundle))
	}
	for name, cert := range map[string]*x509.Certificate{"old": srv2, "new": srv3} {
		if err := verifies(cert, bundle, "127.0.0.1", rotateAt); err != nil {
			t.Errorf("%s serving certificate not trusted during the overlap: %v", name, err)
		}
	}
	sec := getSecret(t, cs)
	if len(sec.Data[KeyPreviousCA]) == 0 || sec.Annotations[CARotatedAtAnnotation] != rotateAt.UTC().Format(time.RFC3339) {
		t.Fatalf("Secret does not record the previous CA: annotations %v", sec.Annotations)
	}

	c.Set(rotateAt.Add(DefaultCAOverlap - time.Second))
	sync1(t, k)
	if n := len(bundleOf(t, getConfig(t, cs))); n != 2 {
		t.Fatalf("previous CA dropped before the overlap ended (%d CAs)", n)
	}
	c.Set(rotateAt.Add(DefaultCAOverlap + time.Second))
	sync1(t, k)
	bundle = bundleOf(t, getConfig(t, cs))
	sec = getSecret(t, cs)
	if len(bundle) != 1 || bundle[0].Equal(ca1) || len(sec.Data[KeyPreviousCA]) != 0 || sec.Annotations[CARotatedAtAnnotation] != "" {
		t.Fatalf("after the overlap: %d CAs in caBundle, previous CA in Secret %v", len(bundle), len(sec.Data[KeyPreviousCA]) > 0)
	}
	if !served(t, k).Equal(srv3) {
		t.Fatalf("serving certificate changed when the overlap ended")
	}
}
