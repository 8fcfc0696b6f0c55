package webhookconfig

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/certs"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
)

// TestRaceConverges: two replicas syncing at once, at creation and again
// at a CA rotation, end up presenting the one certificate in the Secret,
// trusted by the stored caBundle.
func TestRaceConverges(t *testing.T) {
	t.Parallel()
	cs, c := newClient(), newClock()
	logs := &testkit.LogBuffer{}
	a, b := newKeeper(t, cs, c, logs), newKeeper(t, cs, c, logs)
	race := func() {
		var wg sync.WaitGroup
		for i := range 8 {
			k := a
			if i%2 == 1 {
				k = b
			}
			wg.Go(func() {
				if err := k.Sync(context.Background()); err != nil {
					t.Errorf("Sync: %v", err)
				}
			})
		}
		wg.Wait()
		// One more round so every replica has read the final Secret.
		sync1(t, a)
		sync1(t, b)
	}
	check := func(stage string) {
		sec := getSecret(t, cs)
		want, err := certs.ParseCertificates(sec.Data[corev1.TLSCertKey])
		if err != nil {
			t.Fatal(err)
		}
		for name, k := range map[string]*Keeper{"a": a, "b": b} {
			if !served(t, k).Equal(want[0]) {
				t.Fatalf("%s: replica %s presents a certificate other than the Secret's", stage, name)
			}
		}
		if err := verifies(want[0], bundleOf(t, getConfig(t, cs)), "127.0.0.1", c.Now()); err != nil {
			t.Fatalf("%s: caBundle does not trust the Secret's certificate: %v", stage, err)
		}
	}
	race()
	check("creation")
	ca1 := bundleOf(t, getConfig(t, cs))[0]
	c.Set(ca1.NotAfter.Add(-29 * day))
	race()
	check("CA rotation")
	if bundle := bundleOf(t, getConfig(t, cs)); len(bundle) != 2 || !bundle[1].Equal(ca1) {
		t.Fatalf("after racing rotations caBundle has %d CAs (old kept: %v)", len(bundle), len(bundle) == 2 && bundle[1].Equal(ca1))
	}
}

// TestLostRaceAdoptsWinner: a replica whose create or update of the Secret
// loses to another replica's write adopts what the winner wrote.
func TestLostRaceAdoptsWinner(t *testing.T) {
	t.Parallel()
	for _, verb := range []string{"create", "update"} {
		t.Run(verb, func(t *testing.T) {
			t.Parallel()
			cs, c := newClient(), newClock()
			a, winner := newKeeper(t, cs, c, nil), newKeeper(t, newClient(), c, nil)
			if verb == "update" {
				sync1(t, a)
				c.Set(t0.Add(61 * day)) // the serving certificate is due
			}
			sync1(t, winner) // its own cluster: just to have material
			var once sync.Once
			cs.PrependReactor(verb, "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
				once.Do(func() {
					// The other replica writes first (under the Fake's lock,
					// straight into the tracker).
					won := getSecret(t, winner.client)
					if verb == "update" {
						cur, err := cs.Tracker().Get(corev1.SchemeGroupVersion.WithResource("secrets"), release, DefaultSecretName)
						if err != nil {
							t.Error(err)
							return
						}
						won.ResourceVersion = cur.(*corev1.Secret).ResourceVersion + "0"
						if err := cs.Tracker().Update(corev1.SchemeGroupVersion.WithResource("secrets"), won, release); err != nil {
							t.Error(err)
						}
						return
					}
					won.ResourceVersion = "100"
					if err := cs.Tracker().Add(won); err != nil {
						t.Error(err)
					}
				})
				return false, nil, nil
			})
			sync1(t, a)
			if !served(t, a).Equal(served(t, winner)) {
				t.Fatalf("the loser of the %s race presents its own certificate", verb)
			}
		})
	}
}

// TestStaleSecretNotRolledBack: a replica that read the Secret before
// another one rotated the CA does not take the new CA out of caBundle.
func TestStaleSecretNotRolledBack(t *testing.T) {
	t.Parallel()
	cs, c := newClient(), newClock()
	a, b := newKeeper(t, cs, c, nil), newKeeper(t, cs, c, nil)
	sync1(t, a)
	stale, err := a.ensureSecret(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c.Set(stale.bundle.CA.Cert.NotAfter.Add(-29 * day))
	sync1(t, b) // b rotates the CA
	if err := a.ensureConfiguration(context.Background(), stale, false); !errors.Is(err, errStale) {
		t.Fatalf("ensureConfiguration with a stale Secret = %v, want errStale", err)
	}
	sync1(t, a)
	if !served(t, a).Equal(served(t, b)) {
		t.Fatalf("replicas disagree after a stale read")
	}
	if n := len(bundleOf(t, getConfig(t, cs))); n != 2 {
		t.Fatalf("caBundle has %d CAs, want the new and the old", n)
	}
}

// TestDriftRepaired: whatever is changed in the stored configuration, the
// next Sync puts back.
func TestDriftRepaired(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		edit  func(c *admissionregistrationv1.MutatingWebhookConfiguration)
		drift string
	}{
		{"caBundle emptied", func(c *admissionregistrationv1.MutatingWebhookConfiguration) {
			c.Webhooks[0].ClientConfig.CABundle = nil
		}, "caBundle"},
		{"caBundle of another CA", func(c *admissionregistrationv1.MutatingWebhookConfiguration) {
			other, _ := certs.Generate(t0.Add(-day), []string{"x"}, certs.Options{})
			c.Webhooks[0].ClientConfig.CABundle = certs.EncodeCertificates(other.CA.Cert)
		}, "caBundle"},
		{"URL changed", func(c *admissionregistrationv1.MutatingWebhookConfiguration) {
			u := "https://evil.example/x"
			c.Webhooks[0].ClientConfig.URL = &u
		}, "clientConfig"},
		{"rules widened", func(c *admissionregistrationv1.MutatingWebhookConfiguration) {
			c.Webhooks[0].Rules[0].Resources = []string{"*"}
		}, "rules"},
		{"namespace selector dropped", func(c *admissionregistrationv1.MutatingWebhookConfiguration) { c.Webhooks[0].NamespaceSelector = nil }, "namespaceSelector"},
		{"object selector dropped", func(c *admissionregistrationv1.MutatingWebhookConfiguration) {
			c.Webhooks[0].ObjectSelector = &metav1.LabelSelector{}
		}, "objectSelector"},
		{"failure policy Fail", func(c *admissionregistrationv1.MutatingWebhookConfiguration) {
			fail := admissionregistrationv1.Fail
			c.Webhooks[0].FailurePolicy = &fail
		}, "webhook"},
		{"timeout raised", func(c *admissionregistrationv1.MutatingWebhookConfiguration) {
			thirty := int32(30)
			c.Webhooks[0].TimeoutSeconds = &thirty
		}, "webhook"},
		{"second webhook added", func(c *admissionregistrationv1.MutatingWebhookConfiguration) {
			c.Webhooks = append(c.Webhooks, *c.Webhooks[0].DeepCopy())
		}, "2 webhooks"},
		{"labels removed", func(c *admissionregistrationv1.MutatingWebhookConfiguration) { c.Labels = nil }, "labels"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cs, _, k, logs := syncedKeeper(t)
			want := getConfig(t, cs)
			cfg := want.DeepCopy()
			tc.edit(cfg)
			if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(context.Background(), cfg, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			sync1(t, k)
			got := getConfig(t, cs)
			if d := driftOf(got, want); d != "" {
				t.Fatalf("not repaired: %s", d)
			}
			if !strings.Contains(logs.String(), `"drift":"`+tc.drift) {
				t.Errorf("no repair log naming %q:\n%s", tc.drift, logs.String())
			}
		})
	}
	t.Run("deleted", func(t *testing.T) {
		t.Parallel()
		cs, _, k, _ := syncedKeeper(t)
		if err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), DefaultConfigurationName, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		sync1(t, k)
		getConfig(t, cs)
	})
}

// TestBadSecretRegenerated: unreadable material is replaced, with a log
// line naming the field; what is still good is kept.
func TestBadSecretRegenerated(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		edit        func(s *corev1.Secret)
		field       string
		caKept      bool
		previousSet bool
	}{
		{"tls.crt garbage", func(s *corev1.Secret) { s.Data[corev1.TLSCertKey] = []byte("garbage") }, corev1.TLSCertKey, true, false},
		{"tls.key missing", func(s *corev1.Secret) { delete(s.Data, corev1.TLSPrivateKeyKey) }, corev1.TLSPrivateKeyKey, true, false},
		{"tls.key of another certificate", func(s *corev1.Secret) { s.Data[corev1.TLSPrivateKeyKey] = s.Data[KeyCAKey] }, corev1.TLSPrivateKeyKey, true, false},
		{"ca.crt garbage", func(s *corev1.Secret) {
			s.Data[KeyCACert] = []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
		}, KeyCACert, false, false},
		{"ca.key garbage", func(s *corev1.Secret) { s.Data[KeyCAKey] = []byte("x") }, KeyCAKey, false, true},
		{"ca-previous.crt garbage", func(s *corev1.Secret) {
			s.Data[KeyPreviousCA] = []byte("x")
			s.Annotations = map[string]string{CARotatedAtAnnotation: t0.Format(time.RFC3339)}
		}, KeyPreviousCA, true, false},
		{"rotation time garbage", func(s *corev1.Secret) {
			s.Data[KeyPreviousCA] = s.Data[KeyCACert]
			s.Annotations = map[string]string{CARotatedAtAnnotation: "yesterday"}
		}, "metadata.annotations[" + CARotatedAtAnnotation + "]", true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cs, c, k, logs := syncedKeeper(t)
			ca1 := bundleOf(t, getConfig(t, cs))[0]
			sec := getSecret(t, cs)
			tc.edit(sec)
			if _, err := cs.CoreV1().Secrets(release).Update(context.Background(), sec, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			sync1(t, k)
			if logs.Count(`"field":"`+strings.ReplaceAll(tc.field, `"`, `\"`)+`"`) == 0 {
				t.Fatalf("no log line naming field %s:\n%s", tc.field, logs.String())
			}
			sec = getSecret(t, cs)
			b, err := certs.ParseKeyPair(sec.Data[KeyCACert], sec.Data[KeyCAKey])
			if err != nil {
				t.Fatalf("CA still unusable: %v", err)
			}
			if _, err := certs.ParseKeyPair(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey]); err != nil {
				t.Fatalf("serving pair still unusable: %v", err)
			}
			if b.Cert.Equal(ca1) != tc.caKept {
				t.Errorf("CA kept = %v, want %v", b.Cert.Equal(ca1), tc.caKept)
			}
			if got := len(sec.Data[KeyPreviousCA]) > 0; got != tc.previousSet {
				t.Errorf("previous CA recorded = %v, want %v", got, tc.previousSet)
			}
			if err := verifies(served(t, k), bundleOf(t, getConfig(t, cs)), "127.0.0.1", c.Now()); err != nil {
				t.Errorf("served certificate not trusted: %v", err)
			}
		})
	}
	t.Run("wrong type", func(t *testing.T) {
		t.Parallel()
		opaque := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: DefaultSecretName, Namespace: release, ResourceVersion: "1"}, Type: corev1.SecretTypeOpaque}
		cs, c := newClient(opaque), newClock()
		k := newKeeper(t, cs, c, nil)
		sync1(t, k)
		if s := getSecret(t, cs); s.Type != corev1.SecretTypeTLS {
			t.Fatalf("Secret type %s", s.Type)
		}
	})
}

// TestSyncErrors: API errors come back named; a configuration that cannot
// be written does not stop the server from getting a certificate at
// start-up.
func TestSyncErrors(t *testing.T) {
	t.Parallel()
	forbid := func(verb, resource string) func(*k8stesting.Fake) {
		return func(f *k8stesting.Fake) {
			f.PrependReactor(verb, resource, func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: resource}, "x", errors.New("RBAC"))
			})
		}
	}
	tests := []struct {
		name    string
		setup   func(*k8stesting.Fake)
		want    string
		hasCert bool
	}{
		{"secret get forbidden", forbid("get", "secrets"), "get Secret selfhost-system/" + DefaultSecretName, false},
		{"secret create forbidden", forbid("create", "secrets"), "create Secret", false},
		{"configuration create forbidden", forbid("create", "mutatingwebhookconfigurations"), "create MutatingWebhookConfiguration", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cs := newClient()
			tc.setup(&cs.Fake)
			k := newKeeper(t, cs, newClock(), nil)
			err := k.Sync(context.Background())
			if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Sync = %v, want Forbidden naming %q", err, tc.want)
			}
			if _, err := k.GetCertificate(nil); (err == nil) != tc.hasCert {
				t.Fatalf("GetCertificate: %v, want a certificate: %v", err, tc.hasCert)
			}
		})
	}
}

// TestRun: Run repairs a deleted configuration within an interval, and
// returns when its context ends.
func TestRun(t *testing.T) {
	t.Parallel()
	cs := newClient()
	k := newKeeper(t, cs, &clock{t: time.Now()}, nil, func(o *Options) { o.Now, o.Interval = nil, 20*time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	configs := cs.AdmissionregistrationV1().MutatingWebhookConfigurations()
	exists := func() bool {
		_, err := configs.Get(ctx, DefaultConfigurationName, metav1.GetOptions{})
		return err == nil
	}
	waitFor(t, "the configuration", exists)
	if err := configs.Delete(ctx, DefaultConfigurationName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deleted configuration to be repaired", exists)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// TestRunRetriesFailures: while the API refuses, Run keeps retrying and
// logs each failure; once it accepts, the Secret appears.
func TestRunRetriesFailures(t *testing.T) {
	t.Parallel()
	cs := newClient()
	var mu sync.Mutex
	refuse := true
	cs.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		if refuse {
			return true, nil, apierrors.NewServiceUnavailable("starting")
		}
		return false, nil, nil
	})
	logs := &testkit.LogBuffer{}
	k := newKeeper(t, cs, newClock(), logs, func(o *Options) { o.Interval = 50 * time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = k.Run(ctx) }()
	waitFor(t, "a logged failure", func() bool { return strings.Contains(logs.String(), "sync failed") })
	mu.Lock()
	refuse = false
	mu.Unlock()
	waitFor(t, "a certificate", func() bool { _, err := k.GetCertificate(nil); return err == nil })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, what, 10*time.Second, cond)
}
