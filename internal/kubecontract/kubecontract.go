// Package kubecontract holds the names the in-cluster parts agree on: the
// namespace opt-in label, the pod annotations of the injector, and the
// names and labels of the objects the control plane creates in each
// opted-in namespace. The control plane's controller, the injector's
// webhook and the tests all read them from here, so a rename is one edit.
package kubecontract

// Domain qualifies every label and annotation of this project.
const Domain = "k8s-selfhost-repo.io"

// Namespace opt-in: a namespace whose OptInLabel has exactly the value
// OptInValue gets an edge and has its pods' images rewritten. Any other
// value ("true", "yes", "") is not an opt-in; the controller logs it once.
const (
	OptInLabel = Domain + "/cache"
	OptInValue = "enabled"
)

// Pod annotations.
const (
	// OptOutAnnotation with the value "false" on a pod makes the injector
	// leave it untouched ("k8s-selfhost-repo.io/inject: false").
	OptOutAnnotation = Domain + "/inject"
	// OriginalImagesAnnotation records, as a JSON object, the images the
	// injector rewrote: {"containers/<name>": "<original image>", …} with
	// the prefixes containers, initContainers and ephemeralContainers.
	OriginalImagesAnnotation = Domain + "/original-images"
)

// Objects the control plane creates in an opted-in namespace. Every one
// carries ManagedByLabel=ManagedByValue and ComponentLabel=EdgeComponent,
// which is how the controller finds (and removes) what it owns and how the
// webhook's objectSelector skips the edge's own pods.
const (
	// EdgeName names the ServiceAccount, Deployment and Service.
	EdgeName = "selfhost-edge"
	// PullSecretName is the kubernetes.io/dockerconfigjson Secret holding
	// the namespace's pull token for the edge's node-local address.
	PullSecretName = "selfhost-edge-pull"
	// UpstreamCredentialsSecretName is the kubernetes.io/dockerconfigjson
	// Secret a tenant may create in its namespace with its own
	// credentials for upstream registries ({"auths":{"<host>":{...}}}):
	// that namespace's edges then use them instead of the operator's.
	// The tenant owns it; the control plane only reads it.
	UpstreamCredentialsSecretName = "selfhost-upstream-credentials"

	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "k8s-selfhost-repo-controlplane"
	ComponentLabel = "app.kubernetes.io/component"
	EdgeComponent  = "edge"
	NameLabel      = "app.kubernetes.io/name"
	NameValue      = "selfhost-edge"
)

// WebhookComponent is the ComponentLabel value of the injector's own objects
// in the release namespace (its webhook TLS Secret and
// MutatingWebhookConfiguration); with ManagedByLabel=ManagedByValue it keeps
// anything that selects ComponentLabel=EdgeComponent from touching them.
const WebhookComponent = "webhook"

// LeaseName is the coordination.k8s.io Lease in the release namespace
// that the control plane's replicas elect their leader on: only the leader
// runs the namespace controller.
const LeaseName = "k8s-selfhost-repo-controlplane"

// PullSecretUsername is the user name in the pull Secret; the edge checks
// only the password (the namespace's pull token).
const PullSecretUsername = "selfhost"

// EdgeServiceAccountUser is the Kubernetes user name an edge's projected
// ServiceAccount token authenticates as in namespace ns.
func EdgeServiceAccountUser(ns string) string {
	return "system:serviceaccount:" + ns + ":" + EdgeName
}
