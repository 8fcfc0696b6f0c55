package controller

import (
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

// PolicyRules are the permissions the controller needs, cluster-wide (a
// ClusterRole: opted-in namespaces come and go), each with its reason.
// Its informers list and watch the objects of one name each (field
// selector metadata.name, see NewInformers), which the apiserver
// authorizes by resourceNames; it writes with create, update and delete
// only (no patch), and reads single objects with get when a create finds
// one already there. create cannot be limited to names in RBAC (the
// object does not exist yet when it is authorized). Events are recorded
// through the core/v1 API (client-go tools/record creates them and
// patches repeats), only when an EventRecorder is configured.
func PolicyRules() []rbacv1.PolicyRule {
	owned := []string{"get", "list", "watch", "update", "delete"}
	return []rbacv1.PolicyRule{
		// Which namespaces opted in (the label) and which are terminating:
		// every namespace, since any may opt in.
		{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "list", "watch"}},
		// The edge's objects in every opted-in namespace, created,
		// repaired, deleted with the label: by name only.
		{APIGroups: []string{""}, Resources: []string{"serviceaccounts", "services"}, ResourceNames: []string{kubecontract.EdgeName}, Verbs: owned},
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, ResourceNames: []string{kubecontract.EdgeName}, Verbs: owned},
		{APIGroups: []string{"policy"}, Resources: []string{"poddisruptionbudgets"}, ResourceNames: []string{kubecontract.EdgeName}, Verbs: owned},
		{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{kubecontract.PullSecretName}, Verbs: owned},
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{CAConfigMapName}, Verbs: owned},
		// The tenant's own upstream credentials: read only.
		{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{kubecontract.UpstreamCredentialsSecretName}, Verbs: []string{"get", "list", "watch"}},
		// Creating the objects above: not limited by name in RBAC.
		{APIGroups: []string{""}, Resources: []string{"serviceaccounts", "services", "secrets", "configmaps"}, Verbs: []string{"create"}},
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"create"}},
		{APIGroups: []string{"policy"}, Resources: []string{"poddisruptionbudgets"}, Verbs: []string{"create"}},
		// Why an edge changed or could not be made (kubectl describe).
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
	}
}
