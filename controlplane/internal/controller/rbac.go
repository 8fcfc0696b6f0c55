package controller

import rbacv1 "k8s.io/api/rbac/v1"

// PolicyRules are the permissions the controller needs, cluster-wide (a
// ClusterRole: opted-in namespaces come and go), each with its reason.
// Its informers list and watch; it writes with create, update and delete
// only (no patch), and reads single objects with get when a create finds
// one already there. Events are recorded through the core/v1 API
// (client-go tools/record creates them and patches repeats), only when an
// EventRecorder is configured.
//
// Note that cluster-wide get/list/watch on Secrets cannot be narrowed by
// label in RBAC: the informer asks only for the edge's pull Secrets, but
// the role allows reading any Secret.
func PolicyRules() []rbacv1.PolicyRule {
	rw := []string{"get", "list", "watch", "create", "update", "delete"}
	return []rbacv1.PolicyRule{
		// Which namespaces opted in (the label) and which are terminating.
		{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "list", "watch"}},
		// The edge's ServiceAccount, pull Secret and NodePort Service in
		// every opted-in namespace: created, repaired, deleted with the
		// label.
		{APIGroups: []string{""}, Resources: []string{"serviceaccounts", "secrets", "services"}, Verbs: rw},
		// The edge's Deployment, likewise.
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: rw},
		// The CA ConfigMap (WithCABundle): the CA bundle the edge verifies
		// the control plane's gRPC TLS with; rewritten when the CA rotates.
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: rw},
		// The edge's PodDisruptionBudget: drains evict one edge pod at a
		// time.
		{APIGroups: []string{"policy"}, Resources: []string{"poddisruptionbudgets"}, Verbs: rw},
		// Why an edge changed or could not be made (kubectl describe).
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
	}
}
