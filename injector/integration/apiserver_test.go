// Package integration runs the injector against a real kube-apiserver
// (test/harness StartKube). It lives apart from the unit-tested packages so
// their test binaries do not link the harness.
package integration

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/certs"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/rewrite"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/webhook"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/webhookconfig"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

const (
	release = "selfhost-system"
	optedIn = "team-a"
	plain   = "team-plain"
	edge    = "127.0.0.1:30500"
)

// warnings collects the warnings the API server passes on to a client.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.msgs
	w.msgs = nil
	return out
}

// TestWebhookOnAPIServer: the Keeper's MutatingWebhookConfiguration (url
// client config, its own CA) makes a real API server call the handler for
// pods of labelled namespaces only; stored pods carry the rewritten images,
// the original-images annotation and the pull Secret; with the webhook
// server gone, pods are still admitted, unchanged.
func TestWebhookOnAPIServer(t *testing.T) {
	t.Parallel()
	kube := harness.StartKube(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))

	var warned warnings
	cfg := rest.CopyConfig(kube.Config)
	cfg.WarningHandler = &warned
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for name, labels := range map[string]map[string]string{
		release: nil,
		optedIn: {kubecontract.OptInLabel: kubecontract.OptInValue},
		plain:   nil,
	} {
		mustCreateNamespace(ctx, t, client, name, labels)
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The Keeper's clock can jump ahead by a few minutes (certificates are
	// backdated five): a one-hour CA that is due four minutes after it was
	// made lets the test rotate it on demand.
	var skew atomic.Int64
	keeper, err := webhookconfig.New(kube.Client, webhookconfig.Options{
		Namespace:     release,
		URL:           "https://" + lis.Addr().String() + webhook.Path,
		Logger:        log,
		Certs:         certs.Options{CAValidity: time.Hour, CARenewBefore: time.Hour - 4*time.Minute},
		CAPropagation: 3 * time.Second,
		Now:           func() time.Time { return time.Now().Add(time.Duration(skew.Load())) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := keeper.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	mux := http.NewServeMux()
	mux.Handle(webhook.Path, webhook.NewHandler(testPolicies(), webhook.WithReleaseNamespace(release), webhook.WithLogger(log)))
	srv := &http.Server{Handler: mux, TLSConfig: keeper.TLSConfig(), ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(lis, "", "") }()
	// A safety net when a subtest stops early; "webhook server down" closes
	// the server and checks that error.
	defer func() { _ = srv.Close() }()

	// The API server picks the configuration up asynchronously: probe
	// with dry-run creates (sideEffects None allows them) until mutated.
	waitMutated(ctx, t, client)
	warned.take()

	t.Run("labelled namespace", func(t *testing.T) {
		p := newPod("web", "nginx:1.25", "ghcr.io/o/r@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "example.com/x:1")
		p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "busybox"}}
		got := mustCreatePod(ctx, t, client, optedIn, p)
		want := []string{
			edge + "/dockerhub/library/nginx:1.25",
			edge + "/ghcr/o/r@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			"example.com/x:1",
		}
		if imgs := images(got.Spec.Containers); !slices.Equal(imgs, want) {
			t.Errorf("containers %q, want %q", imgs, want)
		}
		if img := got.Spec.InitContainers[0].Image; img != edge+"/dockerhub/library/busybox:latest" {
			t.Errorf("init container %q", img)
		}
		var originals map[string]string
		if err := json.Unmarshal([]byte(got.Annotations[kubecontract.OriginalImagesAnnotation]), &originals); err != nil {
			t.Fatalf("annotation: %v", err)
		}
		if originals["containers/c0"] != "nginx:1.25" || originals["initContainers/init"] != "busybox" || len(originals) != 3 {
			t.Errorf("original images %v", originals)
		}
		if !slices.Contains(got.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: kubecontract.PullSecretName}) {
			t.Errorf("imagePullSecrets %v", got.Spec.ImagePullSecrets)
		}
		if w := warned.take(); len(w) != 1 || !strings.Contains(w[0], `"example.com/x:1"`) {
			t.Errorf("warnings to the client: %q", w)
		}
	})

	untouched := []struct {
		name string
		ns   string
		edit func(p *corev1.Pod)
	}{
		{"unlabelled namespace", plain, func(*corev1.Pod) {}},
		{"opt-out annotation", optedIn, func(p *corev1.Pod) {
			p.Annotations = map[string]string{kubecontract.OptOutAnnotation: "false"}
		}},
		{"edge pod", optedIn, func(p *corev1.Pod) {
			p.Labels = map[string]string{kubecontract.ManagedByLabel: kubecontract.ManagedByValue, kubecontract.ComponentLabel: kubecontract.EdgeComponent}
		}},
	}
	for i, tc := range untouched {
		t.Run(tc.name, func(t *testing.T) {
			p := newPod("untouched-"+string(rune('a'+i)), "nginx")
			tc.edit(p)
			got := mustCreatePod(ctx, t, client, tc.ns, p)
			if img := got.Spec.Containers[0].Image; img != "nginx" || got.Annotations[kubecontract.OriginalImagesAnnotation] != "" || len(got.Spec.ImagePullSecrets) != 0 {
				t.Errorf("pod changed: image %q annotations %v pull secrets %v", img, got.Annotations, got.Spec.ImagePullSecrets)
			}
		})
	}

	t.Run("no drift on a real API server", func(t *testing.T) {
		before, err := kube.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, webhookconfig.DefaultConfigurationName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := keeper.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		after, err := kube.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, webhookconfig.DefaultConfigurationName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if before.ResourceVersion != after.ResourceVersion {
			t.Errorf("Sync rewrote an up-to-date configuration (the API server's defaults differ from ours)")
		}
	})

	t.Run("CA rotation", func(t *testing.T) {
		before, err := keeper.GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		skew.Store(int64(4*time.Minute + time.Second))
		if err := keeper.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		cfg, err := kube.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, webhookconfig.DefaultConfigurationName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if cas, err := certs.ParseCertificates(cfg.Webhooks[0].ClientConfig.CABundle); err != nil || len(cas) != 2 {
			t.Fatalf("caBundle after the rotation: %d CAs, %v", len(cas), err)
		}
		now, _ := keeper.GetCertificate(nil)
		if now != before {
			t.Fatalf("switched to the new CA at once")
		}
		mustBeMutated(ctx, t, client, "during-propagation")
		time.Sleep(3 * time.Second)
		if err := keeper.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if now, _ := keeper.GetCertificate(nil); now == before || now.Leaf.Issuer.String() == "" {
			t.Fatalf("still presenting the previous CA's certificate")
		}
		mustBeMutated(ctx, t, client, "after-switch")
	})

	t.Run("webhook server down", func(t *testing.T) {
		if err := srv.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Fatalf("server: %v", err)
		}
		got := mustCreatePod(ctx, t, client, optedIn, newPod("while-down", "nginx"))
		if img := got.Spec.Containers[0].Image; img != "nginx" {
			t.Errorf("image %q, want it unchanged", img)
		}
	})
}

func mustBeMutated(ctx context.Context, t *testing.T, c kubernetes.Interface, name string) {
	t.Helper()
	got := mustCreatePod(ctx, t, c, optedIn, newPod(name, "nginx"))
	if img := got.Spec.Containers[0].Image; img != edge+"/dockerhub/library/nginx:latest" {
		t.Errorf("pod %s: image %q: the API server did not get an answer from the webhook", name, img)
	}
}

func testPolicies() webhook.Policies {
	rules := rewrite.Rules{
		EdgeAddress: edge,
		Upstreams: []rewrite.Upstream{
			{Prefix: "dockerhub", URL: "https://registry-1.docker.io", Hosts: []string{"docker.io", "index.docker.io"}},
			{Prefix: "ghcr", URL: "https://ghcr.io"},
		},
	}
	return webhook.PoliciesFunc(func(_ context.Context, ns string) (webhook.Namespace, bool) {
		// Every namespace would be opted in here: the API server's
		// namespaceSelector alone keeps team-plain's pods away.
		return webhook.Namespace{Rules: rules, PullSecret: kubecontract.PullSecretName}, true
	})
}

func newPod(name string, imgs ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for i, img := range imgs {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "c" + string(rune('0'+i)), Image: img})
	}
	return p
}

func images(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Image)
	}
	return out
}

func mustCreateNamespace(ctx context.Context, t *testing.T, c kubernetes.Interface, name string, labels map[string]string) {
	t.Helper()
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	// No kube-controller-manager runs: create what it would.
	if _, err := c.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create ServiceAccount %s/default: %v", name, err)
	}
}

func mustCreatePod(ctx context.Context, t *testing.T, c kubernetes.Interface, ns string, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	if _, err := c.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, p.Name, err)
	}
	got, err := c.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get pod %s/%s: %v", ns, p.Name, err)
	}
	return got
}

func waitMutated(ctx context.Context, t *testing.T, c kubernetes.Interface) {
	t.Helper()
	testkit.WaitFor(t, "the API server calling the webhook", 30*time.Second, func() error {
		got, err := c.CoreV1().Pods(optedIn).Create(ctx, newPod("probe", "nginx"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil && got.Spec.Containers[0].Image == "nginx" {
			err = errors.New("pod not mutated")
		}
		return err
	})
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
