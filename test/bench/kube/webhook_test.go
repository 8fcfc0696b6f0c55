//go:build bench

package kube

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/rewrite"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/webhook"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/webhookconfig"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

// reviewBody is an AdmissionReview v1 of a pod CREATE in ns, as the
// apiserver sends it.
func reviewBody(t *testing.T, ns string, pod *corev1.Pod) []byte {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:             types.UID("0b7d3a4e-1f7c-4f0e-9d55-5b6a3b2a9c01"),
			Kind:            metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:        metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			RequestKind:     &metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			RequestResource: &metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Name:            pod.Name,
			Namespace:       ns,
			Operation:       admissionv1.Create,
			Object:          runtime.RawExtension{Raw: raw},
			Options:         runtime.RawExtension{Raw: []byte(`{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1"}`)},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkResponse says what is wrong with a webhook answer ("" when
// nothing): always allowed, a patch exactly when patched is true.
func checkResponse(body []byte, patched bool) string {
	var rv admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &rv); err != nil {
		return fmt.Sprintf("not an AdmissionReview: %v", err)
	}
	switch r := rv.Response; {
	case r == nil:
		return "no response"
	case !r.Allowed:
		return "not allowed"
	case patched && len(r.Patch) == 0:
		return "no patch for an opted-in namespace"
	case !patched && len(r.Patch) != 0:
		return "a patch for a namespace that is not opted in"
	}
	return ""
}

// measureWebhook is row 2: the injector's handler over HTTPS (the control
// plane's server, as the apiserver calls it) and in process.
func measureWebhook(t *testing.T, c *cluster, s settings) []row {
	t.Helper()
	if pods.plainPod == nil {
		t.Fatal("no stored pod from the pod row")
	}
	ctx := context.Background()
	sec, err := c.kube.Client.CoreV1().Secrets(release).Get(ctx, webhookconfig.DefaultSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("webhook TLS Secret: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(sec.Data[webhookconfig.KeyCACert]) {
		t.Fatalf("Secret %s/%s: no CA in %s", release, webhookconfig.DefaultSecretName, webhookconfig.KeyCACert)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 256,
	}}
	defer client.CloseIdleConnections()
	pod := stripForReview(pods.plainPod, "hook-bench")
	bodies := [][]byte{reviewBody(t, optedNS, pod), reviewBody(t, plainNS, pod)}
	url := "https://" + c.cp.WebhookAddr + webhook.Path
	var badMu sync.Mutex
	bad := make([]string, 2)
	post := func(arm, _ int) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(bodies[arm]))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %s: %s", resp.Status, b)
		}
		if msg := checkResponse(b, arm == 0); msg != "" {
			badMu.Lock()
			if bad[arm] == "" {
				bad[arm] = msg
			}
			badMu.Unlock()
		}
		return nil
	}
	openLoop(2, s.hookRate, time.Second, 500*time.Millisecond, post) // warm-up
	res := openLoop(2, s.hookRate, s.hookFor, time.Second, post)
	for arm, r := range res {
		if r.errs > 0 {
			t.Errorf("webhook over HTTPS, arm %d: %d requests failed, the first: %v", arm, r.errs, r.firstErr)
		}
		if bad[arm] != "" {
			t.Errorf("webhook over HTTPS, arm %d: %s", arm, bad[arm])
		}
	}
	https := latRow(row{
		name: fmt.Sprintf("injector webhook over HTTPS (the control plane's server), %d reviews/s open loop for %v per arm", s.hookRate, s.hookFor),
	}, res[0].lat, res[1].lat)
	https.this = "opted-in namespace (3 images rewritten): " + https.this
	https.base = "same review, namespace not opted in (decode + lookup + allow): " + https.base
	https.notes = fmt.Sprintf("AdmissionReview of %d bytes (a stored pod with the apiserver's defaults); keep-alive TLS, CA from Secret %s", len(bodies[0]), webhookconfig.DefaultSecretName) +
		errorsLine(res[0].errs+res[1].errs, firstErr(res))

	// In process: the bare handler, no TLS, no network, no logging.
	rules := rewrite.Rules{EdgeAddress: pods.edge, Upstreams: []rewrite.Upstream{
		{Prefix: "dockerhub", URL: "https://registry-1.docker.io", Hosts: []string{"docker.io", "index.docker.io"}},
		{Prefix: "ghcr", URL: "https://ghcr.io"},
	}}
	h := webhook.NewHandler(webhook.PoliciesFunc(func(_ context.Context, ns string) (webhook.Namespace, bool) {
		if ns != optedNS {
			return webhook.Namespace{}, false
		}
		return webhook.Namespace{Rules: rules, PullSecret: kubecontract.PullSecretName}, true
	}), webhook.WithReleaseNamespace(release))
	call := func(arm int) (time.Duration, error) {
		req := httptest.NewRequest(http.MethodPost, webhook.Path, bytes.NewReader(bodies[arm]))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		start := time.Now()
		h.ServeHTTP(rec, req)
		d := time.Since(start)
		if rec.Code != http.StatusOK {
			return d, fmt.Errorf("HTTP %d: %s", rec.Code, rec.Body.String())
		}
		if msg := checkResponse(rec.Body.Bytes(), arm == 0); msg != "" {
			return d, fmt.Errorf("%s", msg)
		}
		return d, nil
	}
	var lat [2][]time.Duration
	for i := range s.inProcess/5 + 2*s.inProcess {
		arm := i % 2
		d, err := call(arm)
		if err != nil {
			t.Fatalf("in-process handler: %v", err)
		}
		if i >= s.inProcess/5 { // the first fifth warms up
			lat[arm] = append(lat[arm], d)
		}
	}
	inproc := latRow(row{
		name: fmt.Sprintf("injector handler in process (webhook.NewHandler, httptest), %d calls per arm, alternating", s.inProcess),
	}, lat[0], lat[1])
	inproc.this = "opted-in namespace: " + inproc.this
	inproc.base = "not opted in: " + inproc.base
	inproc.notes = "pure handler cost: decode, rewrite, JSON patch, encode; one goroutine, while nothing else of the benchmark runs"
	return []row{https, inproc}
}

func firstErr(res []armResult) error {
	for _, r := range res {
		if r.firstErr != nil {
			return r.firstErr
		}
	}
	return nil
}
