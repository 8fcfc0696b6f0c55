package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/rewrite"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

const (
	edge    = "127.0.0.1:30500"
	release = "selfhost-system"
	digest  = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

// testRules mirror the default upstreams plus a custom one whose registry
// host differs from its URL (a mirror in front of a corporate registry).
func testRules() rewrite.Rules {
	return rewrite.Rules{
		EdgeAddress: edge,
		Upstreams: []rewrite.Upstream{
			{Prefix: "dockerhub", URL: "https://registry-1.docker.io", Hosts: []string{"docker.io", "index.docker.io"}},
			{Prefix: "ghcr", URL: "https://ghcr.io"},
			{Prefix: "quay", URL: "https://quay.io"},
			{Prefix: "k8s", URL: "https://registry.k8s.io"},
			{Prefix: "corp", URL: "https://mirror.corp.example", Hosts: []string{"registry.corp.example:5443"}},
		},
	}
}

// testPolicies opts in every namespace named team-*, with variations, and
// also kube-system and the release namespace, which the handler must skip
// on its own.
func testPolicies() Policies {
	nss := map[string]Namespace{
		"team-a":     {Rules: testRules(), PullSecret: kubecontract.PullSecretName},
		"team-nosec": {Rules: testRules()},
		"team-notready": {Rules: testRules(), PullSecret: kubecontract.PullSecretName,
			NotReady: "the edge selfhost-edge has no ready endpoint yet"},
		"team-noaddr": {Rules: func() rewrite.Rules { r := testRules(); r.EdgeAddress = ""; return r }(), PullSecret: kubecontract.PullSecretName},
		"team-ghcr":   {Rules: func() rewrite.Rules { r := testRules(); r.AllowedPrefixes = []string{"ghcr"}; return r }(), PullSecret: kubecontract.PullSecretName},
		"team-broken": {Rules: rewrite.Rules{EdgeAddress: "http://127.0.0.1:30500"}, PullSecret: kubecontract.PullSecretName},
		"kube-system": {Rules: testRules(), PullSecret: kubecontract.PullSecretName},
		release:       {Rules: testRules(), PullSecret: kubecontract.PullSecretName},
	}
	return PoliciesFunc(func(_ context.Context, name string) (Namespace, bool) {
		ns, ok := nss[name]
		return ns, ok
	})
}

func newTestHandler(opts ...Option) *Handler {
	return NewHandler(testPolicies(), append([]Option{WithReleaseNamespace(release)}, opts...)...)
}

// pod builds a pod with containers c0, c1, … running images.
func pod(images ...string) *corev1.Pod {
	p := &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}, ObjectMeta: metav1.ObjectMeta{Name: "web"}}
	for i, img := range images {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: fmt.Sprintf("c%d", i), Image: img})
	}
	return p
}

// review builds an AdmissionReview body.
func review(t testing.TB, ns string, op admissionv1.Operation, sub string, obj, old *corev1.Pod) []byte {
	t.Helper()
	req := &admissionv1.AdmissionRequest{
		UID:         "0b7a1c2e-0000-4000-8000-000000000001",
		Kind:        metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:    metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		SubResource: sub,
		Namespace:   ns,
		Operation:   op,
	}
	if obj != nil {
		req.Object = runtime.RawExtension{Raw: mustJSON(t, obj)}
		req.Name = obj.Name
	}
	if old != nil {
		req.OldObject = runtime.RawExtension{Raw: mustJSON(t, old)}
	}
	return mustJSON(t, admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  req,
	})
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// post sends body to h and returns the status and the decoded response
// (nil unless 200).
func post(t testing.TB, h http.Handler, body []byte) (int, *admissionv1.AdmissionResponse, string) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		return w.Code, nil, w.Body.String()
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatalf("response is not JSON: %v\n%s", err, w.Body.String())
	}
	if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || out.Response == nil {
		t.Fatalf("response is not an AdmissionReview v1 with a response: %s", w.Body.String())
	}
	return w.Code, out.Response, w.Body.String()
}

// allowedOps are the only operations the webhook may write.
var allowedOps = []struct {
	op   string
	path *regexp.Regexp
}{
	{"replace", regexp.MustCompile(`^/spec/(containers|initContainers|ephemeralContainers)/[0-9]+/image$`)},
	{"add", regexp.MustCompile(`^/metadata(/annotations(/` + regexp.QuoteMeta(strings.ReplaceAll(kubecontract.OriginalImagesAnnotation, "/", "~1")) + `)?)?$`)},
	{"add", regexp.MustCompile(`^/spec/imagePullSecrets(/-)?$`)},
}

// checkResponse checks what every answer to a well-formed review must be,
// and applies its patch to obj (raw pod JSON) with a real RFC 6902
// implementation; it returns the patched pod.
func checkResponse(t testing.TB, uid string, resp *admissionv1.AdmissionResponse, obj []byte) []byte {
	t.Helper()
	if string(resp.UID) != uid || !resp.Allowed || resp.Result != nil {
		t.Fatalf("response uid %q allowed %v status %v, want uid %q allowed", resp.UID, resp.Allowed, resp.Result, uid)
	}
	for _, w := range resp.Warnings {
		if len(w) > maxWarningLen {
			t.Fatalf("warning of %d bytes: %q", len(w), w)
		}
	}
	if len(resp.Patch) == 0 {
		if resp.PatchType != nil {
			t.Fatalf("patchType %v without a patch", *resp.PatchType)
		}
		return obj
	}
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patch without patchType JSONPatch")
	}
	var ops []patchOp
	if err := json.Unmarshal(resp.Patch, &ops); err != nil {
		t.Fatalf("patch: %v", err)
	}
	for _, op := range ops {
		ok := false
		for _, a := range allowedOps {
			ok = ok || (op.Op == a.op && a.path.MatchString(op.Path))
		}
		if !ok {
			t.Fatalf("patch op %s %s is not one the webhook may write", op.Op, op.Path)
		}
	}
	p, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatalf("decode patch: %v", err)
	}
	out, err := p.Apply(obj)
	if err != nil {
		t.Fatalf("apply patch %s: %v", resp.Patch, err)
	}
	return out
}
