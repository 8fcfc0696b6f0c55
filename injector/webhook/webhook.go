// Package webhook is the injector's mutating admission webhook
// (injector/README.md): an http.Handler that answers AdmissionReview v1
// requests about pods with a minimal JSON patch that points their images at
// the namespace's edge.
//
// It is split the way Istio's injector is: decode the review and the pod,
// mutate (a pure function of the pod and the namespace's policy, built on
// injector/rewrite, the same rules as the admin API's Resolve), and write
// the changes as RFC 6902 operations. There is no Kubernetes client here;
// what the handler knows about namespaces comes from a Policies.
//
// The handler answers:
//   - CREATE of pods: every container, init container and ephemeral
//     container image is rewritten, the original images are recorded in
//     kubecontract.OriginalImagesAnnotation, and the namespace's pull Secret
//     is added to imagePullSecrets;
//   - UPDATE of pods/ephemeralcontainers (kubectl debug): only ephemeral
//     containers that are new in this request are rewritten, and only when
//     the pod already has the pull Secret (that subresource can change
//     nothing else, and existing ephemeral containers are immutable);
//   - anything else about pods: allowed untouched.
//
// Every well-formed review is answered allowed: the webhook never blocks a
// pod. References it cannot rewrite are left as they are, with an admission
// warning naming the container and the reason. Malformed requests get HTTP
// 400, and the API server's failurePolicy Ignore admits the pod unchanged.
package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/rewrite"
)

// Path is where the control plane serves the handler and where the
// MutatingWebhookConfiguration points.
const Path = "/mutate-pods"

// DefaultMaxBodyBytes bounds a request body: an AdmissionReview carries at
// most two objects (object and oldObject), each at most the API server's
// 3 MiB request limit.
const DefaultMaxBodyBytes = 6 << 20

// ErrBadRequest is wrapped by every reason a request is answered with 400.
var ErrBadRequest = errors.New("bad admission request")

// Namespace is what the injector needs to know about one namespace.
type Namespace struct {
	// Rules are the rewrite rules: upstreams, allowed prefixes, and the
	// edge's node-local address "127.0.0.1:<nodePort>".
	Rules rewrite.Rules
	// PullSecret names the Secret to add to imagePullSecrets ("" = none).
	PullSecret string
	// NotReady, when not empty, says why the edge cannot answer yet (no
	// ready endpoint): images are left untouched and the pod is admitted
	// with a warning saying this.
	NotReady string
}

// Policies looks up opted-in namespaces; ok=false means the namespace is
// not opted in and its pods are admitted untouched.
type Policies interface {
	Namespace(ctx context.Context, name string) (ns Namespace, ok bool)
}

// PoliciesFunc adapts a function to Policies.
type PoliciesFunc func(ctx context.Context, name string) (Namespace, bool)

// Namespace implements Policies.
func (f PoliciesFunc) Namespace(ctx context.Context, name string) (Namespace, bool) {
	return f(ctx, name)
}

// Option configures a Handler.
type Option func(*Handler)

// WithLogger sets the logger; the default discards.
func WithLogger(l *slog.Logger) Option {
	return func(h *Handler) {
		if l != nil {
			h.log = l
		}
	}
}

// WithReleaseNamespace names the namespace the control plane runs in; its
// pods are never mutated (kube-system's never are either).
func WithReleaseNamespace(ns string) Option {
	return func(h *Handler) { h.release = ns }
}

// WithMaxBodyBytes bounds request bodies (default DefaultMaxBodyBytes);
// n <= 0 keeps the default.
func WithMaxBodyBytes(n int64) Option {
	return func(h *Handler) {
		if n > 0 {
			h.maxBody = n
		}
	}
}

// Outcomes of an admission, for WithOutcomeObserver.
const (
	// OutcomeRewritten: the response patches the pod (images rewritten,
	// pull secret added).
	OutcomeRewritten = "rewritten"
	// OutcomeUntouched: an opted-in pod left as it is.
	OutcomeUntouched = "untouched"
	// OutcomeSkipped: not the webhook's business (operation, namespace not
	// opted in or never mutated, pod opted out).
	OutcomeSkipped = "skipped"
	// OutcomeError: a malformed request, or a policy or patch that could
	// not be used (the pod is still allowed, untouched).
	OutcomeError = "error"
)

// WithOutcomeObserver calls fn with the outcome of every request
// (metrics); it must not block.
func WithOutcomeObserver(fn func(outcome string)) Option {
	return func(h *Handler) { h.observe = fn }
}

// Handler serves AdmissionReview v1 requests for pods. It is safe for
// concurrent use.
type Handler struct {
	policies Policies
	log      *slog.Logger
	release  string
	maxBody  int64
	observe  func(outcome string) // nil: none
}

func (h *Handler) outcome(o string) {
	if h.observe != nil {
		h.observe(o)
	}
}

// NewHandler returns a Handler that asks p about namespaces; a nil p
// opts no namespace in.
func NewHandler(p Policies, opts ...Option) *Handler {
	if p == nil {
		p = PoliciesFunc(func(context.Context, string) (Namespace, bool) { return Namespace{}, false })
	}
	h := &Handler{
		policies: p,
		log:      slog.New(slog.DiscardHandler),
		maxBody:  DefaultMaxBodyBytes,
	}
	for _, o := range opts {
		o(h)
	}
	return h
}

const (
	reviewAPIVersion = "admission.k8s.io/v1"
	reviewKind       = "AdmissionReview"
)

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "only POST", http.StatusMethodNotAllowed)
		return
	}
	req, err := h.decode(w, r)
	if err != nil {
		h.log.Warn("admission request rejected", "remote", r.RemoteAddr, "error", err)
		h.outcome(OutcomeError)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	resp := h.admit(r.Context(), req)
	out, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: reviewAPIVersion, Kind: reviewKind},
		Response: resp,
	})
	if err != nil {
		// Only strings, bytes and booleans: this cannot fail.
		h.log.Error("encode admission response", "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// request is a decoded, validated AdmissionRequest.
type request struct {
	*admissionv1.AdmissionRequest
	pod, old *corev1.Pod // nil when the operation is not one the webhook mutates
	// noMetadata: the object has no metadata member to add annotations to
	// (the API server always sends one; the patch must apply regardless).
	noMetadata bool
}

func (h *Handler) decode(w http.ResponseWriter, r *http.Request) (*request, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return nil, fmt.Errorf("%w: Content-Type %q: want application/json", ErrBadRequest, clip(r.Header.Get("Content-Type")))
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			return nil, fmt.Errorf("%w: body larger than %d bytes", ErrBadRequest, h.maxBody)
		}
		return nil, fmt.Errorf("%w: read body: %w", ErrBadRequest, err)
	}
	return decodeReview(body)
}

// decodeReview checks an AdmissionReview body and decodes the pods it
// carries. Only the pieces the webhook acts on must be well formed.
func decodeReview(body []byte) (*request, error) {
	var review admissionv1.AdmissionReview
	if err := unmarshal(body, &review); err != nil {
		return nil, fmt.Errorf("%w: not an AdmissionReview: %w", ErrBadRequest, err)
	}
	req := review.Request
	switch {
	case review.APIVersion != reviewAPIVersion || review.Kind != reviewKind:
		return nil, fmt.Errorf("%w: apiVersion %q, kind %q: want %s %s", ErrBadRequest, clip(review.APIVersion), clip(review.Kind), reviewAPIVersion, reviewKind)
	case req == nil:
		return nil, fmt.Errorf("%w: request: missing", ErrBadRequest)
	case req.UID == "":
		return nil, fmt.Errorf("%w: request.uid: missing", ErrBadRequest)
	case req.Resource.Group != "" || req.Resource.Resource != "pods":
		return nil, fmt.Errorf("%w: request.resource %q: only pods", ErrBadRequest, clip(req.Resource.String()))
	}
	out := &request{AdmissionRequest: req}
	if !mutates(req) {
		return out, nil
	}
	if req.Kind.Group != "" || req.Kind.Version != "v1" || req.Kind.Kind != "Pod" {
		return nil, fmt.Errorf("%w: request.kind %q: want v1 Pod", ErrBadRequest, clip(req.Kind.String()))
	}
	var err error
	if out.pod, err = decodePod("object", req.Object.Raw); err != nil {
		return nil, err
	}
	var meta struct {
		Metadata json.RawMessage `json:"metadata"`
	}
	if unmarshal(req.Object.Raw, &meta) == nil {
		out.noMetadata = len(meta.Metadata) == 0 || string(meta.Metadata) == "null"
	}
	if req.Operation == admissionv1.Update {
		if out.old, err = decodePod("oldObject", req.OldObject.Raw); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// unmarshal decodes JSON the way the API server does: keys match fields
// case-sensitively, so "Spec" is not "spec". encoding/json would accept it
// and the patch's paths would then name fields the object does not have.
func unmarshal(data []byte, v any) error {
	return kjson.UnmarshalCaseSensitivePreserveInts(data, v)
}

// mutates tells whether the webhook changes pods in requests like req.
func mutates(req *admissionv1.AdmissionRequest) bool {
	return (req.Operation == admissionv1.Create && req.SubResource == "") ||
		(req.Operation == admissionv1.Update && req.SubResource == "ephemeralcontainers")
}

func decodePod(field string, raw []byte) (*corev1.Pod, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("%w: request.%s: missing", ErrBadRequest, field)
	}
	var pod corev1.Pod
	if err := unmarshal(raw, &pod); err != nil {
		return nil, fmt.Errorf("%w: request.%s: not a Pod: %w", ErrBadRequest, field, err)
	}
	return &pod, nil
}

// admit decides about one well-formed request. It always allows.
func (h *Handler) admit(ctx context.Context, req *request) *admissionv1.AdmissionResponse {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	log := h.log.With("uid", string(req.UID), "namespace", req.Namespace, "operation", string(req.Operation))
	if req.SubResource != "" {
		log = log.With("subresource", req.SubResource)
	}
	if req.pod == nil {
		log.Info("admission", "result", "skipped", "reason", "operation not mutated")
		h.outcome(OutcomeSkipped)
		return resp
	}
	log = log.With("pod", podName(req.pod, req.Name))
	if skip := h.skipNamespace(req.Namespace); skip != "" {
		log.Info("admission", "result", "skipped", "reason", skip)
		h.outcome(OutcomeSkipped)
		return resp
	}
	ns, ok := h.policies.Namespace(ctx, req.Namespace)
	if !ok {
		log.Info("admission", "result", "skipped", "reason", "namespace not opted in")
		h.outcome(OutcomeSkipped)
		return resp
	}
	in := input{pod: req.pod, ns: ns, namespace: req.Namespace, noMetadata: req.noMetadata}
	if req.Operation == admissionv1.Update {
		in.ephemeralOnly, in.old = true, req.old
	}
	m := mutate(in)
	if m.err != nil {
		log.Error("admission: namespace policy unusable, images left untouched", "error", m.err)
	}
	resp.Warnings = m.warnings
	if len(m.ops) > 0 {
		patch, err := json.Marshal(m.ops)
		if err != nil {
			// Values are strings, string maps and LocalObjectReferences.
			log.Error("admission: encode patch", "error", err)
			h.outcome(OutcomeError)
			return resp
		}
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch, resp.PatchType = patch, &pt
	}
	result, outcome := "unchanged", OutcomeUntouched
	switch {
	case m.skipped != "":
		result, outcome = "skipped", OutcomeSkipped
	case len(m.ops) > 0:
		result, outcome = "patched", OutcomeRewritten
	}
	if m.err != nil {
		outcome = OutcomeError
	}
	h.outcome(outcome)
	log.Info("admission", "result", result, "reason", m.skipped,
		"images", m.images, "rewritten", m.rewritten, "untouched", m.images-m.rewritten,
		"pull_secret_added", m.secretAdded, "warnings", len(m.warnings), "patch_ops", len(m.ops))
	return resp
}

func (h *Handler) skipNamespace(ns string) string {
	switch {
	case ns == "":
		return "no namespace in the request"
	case ns == metav1.NamespaceSystem:
		return "kube-system is never mutated"
	case h.release != "" && ns == h.release:
		return "release namespace is never mutated"
	}
	return ""
}

func podName(pod *corev1.Pod, reqName string) string {
	switch {
	case pod.Name != "":
		return pod.Name
	case reqName != "":
		return reqName
	case pod.GenerateName != "":
		return pod.GenerateName + "*"
	}
	return ""
}

func clip(s string) string {
	const maxRunes = 80
	r := []rune(s)
	if len(r) > maxRunes {
		return string(r[:maxRunes]) + "…"
	}
	return s
}
