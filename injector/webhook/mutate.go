package webhook

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/rewrite"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

// The three container lists of a pod, named as in the pod's JSON, in the
// original-images annotation and in warnings.
const (
	listContainers          = "containers"
	listInitContainers      = "initContainers"
	listEphemeralContainers = "ephemeralContainers"
)

// input is everything mutate looks at.
type input struct {
	pod       *corev1.Pod
	ns        Namespace
	namespace string // from the AdmissionRequest; the pod's may be empty
	// noMetadata: the pod's JSON has no metadata object.
	noMetadata bool
	// ephemeralOnly: an UPDATE of pods/ephemeralcontainers. Only ephemeral
	// containers absent from old are rewritten, and nothing else changes.
	ephemeralOnly bool
	old           *corev1.Pod
}

// mutation is what mutate decided.
type mutation struct {
	ops      []patchOp
	warnings []string
	// skipped says why the pod was left alone as a whole; "" when its
	// images were looked at.
	skipped     string
	images      int // images looked at
	rewritten   int
	secretAdded bool
	// err is an unusable namespace policy; the pod is admitted untouched.
	err error
}

// kinds name the lists in warnings.
var kinds = map[string]string{
	listContainers:          "container",
	listInitContainers:      "init container",
	listEphemeralContainers: "ephemeral container",
}

// container is one image-bearing container of the pod.
type container struct {
	list  string
	index int
	name  string
	image string
}

// mutate is the pure core of the webhook: from a pod and its namespace's
// policy to JSON patch operations and warnings. Re-running it on its own
// output yields no operations.
func mutate(in input) mutation {
	var m mutation
	pod := in.pod
	if pod.Labels[kubecontract.ComponentLabel] == kubecontract.EdgeComponent &&
		pod.Labels[kubecontract.ManagedByLabel] == kubecontract.ManagedByValue {
		m.skipped = "the edge's own pod"
		return m
	}
	if v, ok := pod.Annotations[kubecontract.OptOutAnnotation]; ok {
		if strings.EqualFold(strings.TrimSpace(v), "false") {
			m.skipped = "opted out by annotation"
			return m
		}
		if !strings.EqualFold(strings.TrimSpace(v), "true") {
			m.warn(fmt.Sprintf("annotation %s=%s is not \"false\": the pod's images are rewritten", kubecontract.OptOutAnnotation, quote(v)))
		}
	}
	switch {
	case in.ns.NotReady != "":
		m.skipped = "edge not ready"
		m.warn(fmt.Sprintf("images left at their origin: the edge of namespace %s cannot answer yet (%s)", quote(in.namespace), in.ns.NotReady))
		return m
	case in.ns.Rules.EdgeAddress == "":
		m.skipped = "no edge address"
		m.warn(fmt.Sprintf("images left at their origin: the edge of namespace %s has no address yet", quote(in.namespace)))
		return m
	}
	rw, err := rewrite.New(in.ns.Rules)
	if err != nil {
		m.skipped, m.err = "namespace policy unusable", err
		m.warn(fmt.Sprintf("images left at their origin: the image-cache policy of namespace %s is unusable; the control plane's log says why", quote(in.namespace)))
		return m
	}

	hasSecret := in.ns.PullSecret == "" || hasPullSecret(pod, in.ns.PullSecret)
	originals, ok := readOriginals(pod)
	if !ok {
		m.warn(fmt.Sprintf("annotation %s is not a JSON object of strings; it is replaced when images are rewritten", kubecontract.OriginalImagesAnnotation))
	}
	recorded, atEdge := false, false
	for _, c := range containersOf(in) {
		m.images++
		res := rw.Rewrite(c.image)
		switch {
		case !res.Untouched() && in.ephemeralOnly && !hasSecret:
			m.warn(fmt.Sprintf("%s %s image %s not rewritten: the pod has no pull Secret %s for the edge (it is added when the pod is created)", kinds[c.list], quote(c.name), quote(c.image), quote(in.ns.PullSecret)))
		case !res.Untouched():
			m.rewritten++
			atEdge = true
			m.ops = append(m.ops, patchOp{Op: "replace", Path: pointer("spec", c.list, strconv.Itoa(c.index), "image"), Value: res.Rewritten})
			key := c.list + "/" + c.name
			if _, seen := originals[key]; !seen && !in.ephemeralOnly {
				originals[key], recorded = c.image, true
			}
		case res.Reason == rewrite.ReasonAtEdge:
			atEdge = true
		case res.Reason == rewrite.ReasonLoopback:
			// A node-local registry: the node pulls it directly, on purpose.
		default:
			m.warn(fmt.Sprintf("%s %s image %s left at its origin (%s): %s", kinds[c.list], quote(c.name), quote(c.image), res.Reason, res.Detail))
		}
	}
	if in.ephemeralOnly {
		return m
	}
	if recorded {
		value, _ := json.Marshal(originals) // a map of strings always encodes
		annotations := map[string]string{kubecontract.OriginalImagesAnnotation: string(value)}
		switch {
		case in.noMetadata:
			m.ops = append(m.ops, patchOp{Op: "add", Path: "/metadata", Value: map[string]any{"annotations": annotations}})
		case len(pod.Annotations) == 0:
			m.ops = append(m.ops, patchOp{Op: "add", Path: "/metadata/annotations", Value: annotations})
		default:
			m.ops = append(m.ops, patchOp{Op: "add", Path: pointer("metadata", "annotations", kubecontract.OriginalImagesAnnotation), Value: string(value)})
		}
	}
	if atEdge && !hasSecret {
		ref := corev1.LocalObjectReference{Name: in.ns.PullSecret}
		if len(pod.Spec.ImagePullSecrets) == 0 {
			m.ops = append(m.ops, patchOp{Op: "add", Path: "/spec/imagePullSecrets", Value: []corev1.LocalObjectReference{ref}})
		} else {
			m.ops = append(m.ops, patchOp{Op: "add", Path: "/spec/imagePullSecrets/-", Value: ref})
		}
		m.secretAdded = true
	}
	return m
}

// containersOf lists the containers mutate looks at, in patch order.
func containersOf(in input) []container {
	spec := in.pod.Spec
	var out []container
	if !in.ephemeralOnly {
		for i, c := range spec.Containers {
			out = append(out, container{listContainers, i, c.Name, c.Image})
		}
		for i, c := range spec.InitContainers {
			out = append(out, container{listInitContainers, i, c.Name, c.Image})
		}
	}
	existing := map[string]bool{}
	if in.ephemeralOnly && in.old != nil {
		// Existing ephemeral containers are immutable: changing one would
		// make the API server refuse the whole update.
		for _, c := range in.old.Spec.EphemeralContainers {
			existing[c.Name] = true
		}
	}
	for i, c := range spec.EphemeralContainers {
		if !existing[c.Name] {
			out = append(out, container{listEphemeralContainers, i, c.Name, c.Image})
		}
	}
	return out
}

func hasPullSecret(pod *corev1.Pod, name string) bool {
	for _, s := range pod.Spec.ImagePullSecrets {
		if s.Name == name {
			return true
		}
	}
	return false
}

// readOriginals decodes the original-images annotation; ok is false when
// it is present but not a JSON object of strings. The map is never nil.
func readOriginals(pod *corev1.Pod) (map[string]string, bool) {
	raw, present := pod.Annotations[kubecontract.OriginalImagesAnnotation]
	if !present {
		return map[string]string{}, true
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(raw), &m); err != nil || m == nil {
		return map[string]string{}, false
	}
	return m, true
}
