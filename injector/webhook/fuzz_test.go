package webhook

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
)

// FuzzAdmit sends arbitrary bodies: the handler must not panic, and must
// answer either 400 or a valid AdmissionReview v1 that allows the pod,
// echoes the uid, and carries a patch that applies to the object it got.
func FuzzAdmit(f *testing.F) {
	for _, tc := range admitCases {
		op := tc.op
		if op == "" {
			op = admissionv1.Create
		}
		f.Add(review(f, tc.namespace, op, tc.sub, tc.pod, tc.old))
	}
	for _, b := range []string{"", "{}", "null", "[]", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","resource":{"resource":"pods"},"kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"team-a","object":{"spec":{"containers":[{"name":"a","image":"nginx"}],"imagePullSecrets":null},"metadata":{"annotations":null}}}}`} {
		f.Add([]byte(b))
	}
	h := newTestHandler(WithMaxBodyBytes(64 << 10))
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		switch w.Code {
		case http.StatusBadRequest:
			return
		case http.StatusOK:
		default:
			t.Fatalf("status %d: %s", w.Code, w.Body.String())
		}
		var in admissionv1.AdmissionReview
		if err := unmarshal(body, &in); err != nil || in.Request == nil {
			t.Fatalf("200 for a body that is not a review (%v)", err)
		}
		var out admissionv1.AdmissionReview
		if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil || out.Response == nil {
			t.Fatalf("response %q: %v", w.Body.String(), err)
		}
		checkResponse(t, string(in.Request.UID), out.Response, in.Request.Object.Raw)
	})
}
