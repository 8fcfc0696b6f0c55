package webhookconfig

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/certs"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
)

const (
	release = "selfhost-system"
	testURL = "https://127.0.0.1:8443/mutate-pods"
	day     = 24 * time.Hour
)

var t0 = time.Date(2031, 3, 1, 12, 0, 0, 0, time.UTC)

// clock is a settable Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: t0} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// newClient is a fake clientset that, like the API server and unlike the
// plain fake, assigns resourceVersions and refuses updates carrying a stale
// one with Conflict.
func newClient(objects ...runtime.Object) *fake.Clientset {
	cs := fake.NewClientset(objects...)
	rv := 0
	next := func() string { rv++; return strconv.Itoa(rv) }
	// Reactors run under the Fake's lock, so check-and-bump is atomic.
	cs.PrependReactor("create", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if m, err := meta.Accessor(a.(k8stesting.CreateAction).GetObject()); err == nil {
			m.SetResourceVersion(next())
		}
		return false, nil, nil
	})
	cs.PrependReactor("update", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		u := a.(k8stesting.UpdateAction)
		m, err := meta.Accessor(u.GetObject())
		if err != nil {
			return false, nil, nil
		}
		stored, err := cs.Tracker().Get(u.GetResource(), u.GetNamespace(), m.GetName())
		if err != nil {
			return false, nil, nil // the tracker answers NotFound
		}
		sm, _ := meta.Accessor(stored)
		if m.GetResourceVersion() != sm.GetResourceVersion() {
			return true, nil, apierrors.NewConflict(u.GetResource().GroupResource(), m.GetName(),
				fmt.Errorf("resourceVersion %q is not the stored %q", m.GetResourceVersion(), sm.GetResourceVersion()))
		}
		m.SetResourceVersion(next())
		return false, nil, nil
	})
	return cs
}

// newKeeper makes a Keeper with the URL client config, a clock and a log.
func newKeeper(t *testing.T, cs *fake.Clientset, c *clock, logs *testkit.LogBuffer, edit ...func(*Options)) *Keeper {
	t.Helper()
	opts := Options{Namespace: release, URL: testURL, Now: c.Now}
	if logs != nil {
		opts.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	}
	for _, e := range edit {
		e(&opts)
	}
	k, err := New(cs, opts)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sync1(t *testing.T, k *Keeper) {
	t.Helper()
	if err := k.Sync(context.Background()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

// syncedKeeper is a Keeper on a fresh fake cluster that has synced once:
// the Secret and the configuration exist. Its log goes to the returned
// buffer.
func syncedKeeper(t *testing.T) (*fake.Clientset, *clock, *Keeper, *testkit.LogBuffer) {
	t.Helper()
	cs, c, logs := newClient(), newClock(), &testkit.LogBuffer{}
	k := newKeeper(t, cs, c, logs)
	sync1(t, k)
	return cs, c, k, logs
}

// getSecret reads the Secret from a Keeper's cluster.
func getSecret(t *testing.T, cs kubernetes.Interface) *corev1.Secret {
	t.Helper()
	s, err := cs.CoreV1().Secrets(release).Get(context.Background(), DefaultSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func getConfig(t *testing.T, cs *fake.Clientset) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	c, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), DefaultConfigurationName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// bundleOf parses the stored caBundle.
func bundleOf(t *testing.T, cfg *admissionregistrationv1.MutatingWebhookConfiguration) []*x509.Certificate {
	t.Helper()
	cs, err := certs.ParseCertificates(cfg.Webhooks[0].ClientConfig.CABundle)
	if err != nil {
		t.Fatalf("caBundle: %v", err)
	}
	return cs
}

// served is the certificate the Keeper presents.
func served(t *testing.T, k *Keeper) *x509.Certificate {
	t.Helper()
	c, err := k.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf
}

// verifies checks that cert is trusted by bundle for host at now.
func verifies(cert *x509.Certificate, bundle []*x509.Certificate, host string, now time.Time) error {
	pool := x509.NewCertPool()
	for _, c := range bundle {
		pool.AddCert(c)
	}
	_, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: host, CurrentTime: now})
	return err
}

// writes counts create, update and delete actions.
func writes(cs *fake.Clientset) int {
	n := 0
	for _, a := range cs.Actions() {
		switch a.GetVerb() {
		case "create", "update", "delete", "patch":
			n++
		}
	}
	return n
}
