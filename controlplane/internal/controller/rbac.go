package controller

import rbacv1 "k8s.io/api/rbac/v1"

// PolicyRules are the permissions the controller needs, cluster-wide (a
// ClusterRole: opted-in namespaces come and go). Its informers list and
// watch; it writes with create, update and delete only (no patch), and
// reads single objects with get when a create finds one already there.
// Events are recorded through the core/v1 API (client-go tools/record
// creates them and patches repeats), only when an EventRecorder is
// configured.
//
// Note that cluster-wide get/list/watch on Secrets cannot be narrowed by
// label in RBAC: the informer asks only for the edge's pull Secrets, but
// the role allows reading any Secret.
func PolicyRules() []rbacv1.PolicyRule {
	rw := []string{"get", "list", "watch", "create", "update", "delete"}
	return []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"serviceaccounts", "secrets", "services"}, Verbs: rw},
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: rw},
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
	}
}
