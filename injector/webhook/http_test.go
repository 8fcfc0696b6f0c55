package webhook

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
)

// reviewJSON edits a valid review of pod "nginx" in team-a as a generic
// JSON tree, so a case can break exactly one thing.
func reviewJSON(t testing.TB, edit func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(review(t, "team-a", admissionv1.Create, "", pod("nginx"), nil), &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	return mustJSON(t, m)
}

func req(m map[string]any) map[string]any { return m["request"].(map[string]any) }

func TestBadRequests(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		method      string
		contentType string
		body        []byte
		status      int
		message     string
	}{
		{name: "GET", method: http.MethodGet, status: http.StatusMethodNotAllowed, message: "only POST"},
		{name: "no Content-Type", contentType: "-", body: reviewJSON(t, func(map[string]any) {}), message: "Content-Type"},
		{name: "wrong Content-Type", contentType: "application/yaml", body: reviewJSON(t, func(map[string]any) {}), message: "Content-Type"},
		{name: "malformed Content-Type", contentType: "application/json; charset", body: reviewJSON(t, func(map[string]any) {}), message: "Content-Type"},
		{name: "body too large", body: reviewJSON(t, func(m map[string]any) {
			req(m)["object"].(map[string]any)["metadata"].(map[string]any)["annotations"] = map[string]string{"pad": strings.Repeat("x", 8<<10)}
		}), message: "larger than 4096 bytes"},
		{name: "empty body", body: []byte{}, message: "not an AdmissionReview"},
		{name: "not JSON", body: []byte("apiVersion: admission.k8s.io/v1"), message: "not an AdmissionReview"},
		{name: "JSON array", body: []byte(`[{"apiVersion":"admission.k8s.io/v1"}]`), message: "not an AdmissionReview"},
		{name: "trailing data", body: append(reviewJSON(t, func(map[string]any) {}), []byte(" {}")...), message: "not an AdmissionReview"},
		{name: "v1beta1", body: reviewJSON(t, func(m map[string]any) { m["apiVersion"] = "admission.k8s.io/v1beta1" }), message: "apiVersion"},
		{name: "no apiVersion", body: reviewJSON(t, func(m map[string]any) { delete(m, "apiVersion") }), message: "apiVersion"},
		{name: "wrong kind", body: reviewJSON(t, func(m map[string]any) { m["kind"] = "Pod" }), message: "kind"},
		{name: "no request", body: reviewJSON(t, func(m map[string]any) { delete(m, "request") }), message: "request: missing"},
		{name: "request null", body: reviewJSON(t, func(m map[string]any) { m["request"] = nil }), message: "request: missing"},
		{name: "request not an object", body: reviewJSON(t, func(m map[string]any) { m["request"] = "x" }), message: "not an AdmissionReview"},
		{name: "no uid", body: reviewJSON(t, func(m map[string]any) { delete(req(m), "uid") }), message: "request.uid"},
		{name: "deployments", body: reviewJSON(t, func(m map[string]any) {
			req(m)["resource"] = map[string]string{"group": "apps", "version": "v1", "resource": "deployments"}
		}), message: "only pods"},
		{name: "pods of another group", body: reviewJSON(t, func(m map[string]any) {
			req(m)["resource"] = map[string]string{"group": "example.com", "version": "v1", "resource": "pods"}
		}), message: "only pods"},
		{name: "kind not Pod", body: reviewJSON(t, func(m map[string]any) {
			req(m)["kind"] = map[string]string{"group": "", "version": "v1", "kind": "Service"}
		}), message: "request.kind"},
		{name: "no object", body: reviewJSON(t, func(m map[string]any) { delete(req(m), "object") }), message: "request.object: missing"},
		{name: "object null", body: reviewJSON(t, func(m map[string]any) { req(m)["object"] = nil }), message: "request.object: missing"},
		{name: "object not a pod", body: reviewJSON(t, func(m map[string]any) { req(m)["object"] = map[string]any{"spec": 5} }), message: "not a Pod"},
		{name: "containers not a list", body: reviewJSON(t, func(m map[string]any) {
			req(m)["object"].(map[string]any)["spec"] = map[string]any{"containers": map[string]any{"image": "nginx"}}
		}), message: "not a Pod"},
		{name: "image not a string", body: reviewJSON(t, func(m map[string]any) {
			req(m)["object"].(map[string]any)["spec"] = map[string]any{"containers": []any{map[string]any{"name": "c", "image": 5}}}
		}), message: "not a Pod"},
		{name: "ephemeralcontainers without oldObject", body: reviewJSON(t, func(m map[string]any) {
			req(m)["operation"], req(m)["subResource"] = "UPDATE", "ephemeralcontainers"
		}), message: "request.oldObject: missing"},
	}
	h := newTestHandler(WithMaxBodyBytes(4096))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			r := httptest.NewRequest(method, Path, bytes.NewReader(tc.body))
			switch tc.contentType {
			case "":
				r.Header.Set("Content-Type", "application/json")
			case "-":
			default:
				r.Header.Set("Content-Type", tc.contentType)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			status := tc.status
			if status == 0 {
				status = http.StatusBadRequest
			}
			if w.Code != status || !strings.Contains(w.Body.String(), tc.message) {
				t.Fatalf("status %d %q, want %d containing %q", w.Code, w.Body.String(), status, tc.message)
			}
			if len(w.Body.String()) > 400 {
				t.Fatalf("message of %d bytes; keep it short: %q", w.Body.Len(), w.Body.String())
			}
		})
	}
}

// TestNotMutated: well-formed requests the webhook does not change are
// answered allowed, with no patch, even without an object to decode.
func TestNotMutated(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		edit func(m map[string]any)
	}{
		{"charset in Content-Type is fine", func(map[string]any) {}},
		{"DELETE without object", func(m map[string]any) { req(m)["operation"] = "DELETE"; delete(req(m), "object") }},
		{"UPDATE of the pod", func(m map[string]any) { req(m)["operation"] = "UPDATE" }},
		{"UPDATE of pods/status", func(m map[string]any) { req(m)["operation"], req(m)["subResource"] = "UPDATE", "status" }},
		{"CREATE of pods/binding", func(m map[string]any) {
			req(m)["subResource"] = "binding"
			req(m)["kind"] = map[string]string{"group": "", "version": "v1", "kind": "Binding"}
			req(m)["object"] = map[string]any{"target": map[string]string{"name": "node-1"}}
		}},
		{"CONNECT of pods/exec", func(m map[string]any) { req(m)["operation"], req(m)["subResource"] = "CONNECT", "exec" }},
	}
	h := newTestHandler()
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body := reviewJSON(t, tc.edit)
			r := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			if i == 0 {
				r.Header.Set("Content-Type", "application/json; charset=utf-8")
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				t.Fatalf("status %d: %s", w.Code, w.Body.String())
			}
			var out admissionv1.AdmissionReview
			if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil || out.Response == nil || !out.Response.Allowed {
				t.Fatalf("response %s: %v", w.Body.String(), err)
			}
			if i > 0 && len(out.Response.Patch) != 0 {
				t.Fatalf("patched: %s", out.Response.Patch)
			}
		})
	}
}

// TestPodWithoutMetadata: the API server always sends metadata, but a
// patch must apply to whatever object it came with.
func TestPodWithoutMetadata(t *testing.T) {
	t.Parallel()
	body := reviewJSON(t, func(m map[string]any) {
		req(m)["object"] = map[string]any{"spec": map[string]any{"containers": []any{map[string]any{"name": "a", "image": "nginx"}}}}
	})
	code, resp, text := post(t, newTestHandler(), body)
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, text)
	}
	var in admissionv1.AdmissionReview
	if err := unmarshal(body, &in); err != nil {
		t.Fatal(err)
	}
	out := checkResponse(t, string(in.Request.UID), resp, in.Request.Object.Raw)
	if !strings.Contains(string(out), `"metadata":{"annotations":{"k8s-selfhost-repo.io/original-images":`) {
		t.Fatalf("patched object %s", out)
	}
}

func TestNilPolicies(t *testing.T) {
	t.Parallel()
	code, resp, text := post(t, NewHandler(nil), review(t, "team-a", admissionv1.Create, "", pod("nginx"), nil))
	if code != http.StatusOK || !resp.Allowed || len(resp.Patch) != 0 {
		t.Fatalf("status %d %s", code, text)
	}
}
