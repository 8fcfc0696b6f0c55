package configmapstate

import rbacv1 "k8s.io/api/rbac/v1"

// PolicyRules are the permissions a StateStore with the default names needs in
// the release namespace (a Role there), each with its reason: everything
// on its ConfigMap and Secret, by name; and create, which RBAC cannot
// restrict by name (the object does not exist yet).
func PolicyRules() []rbacv1.PolicyRule {
	rw := []string{"get", "list", "watch", "update"}
	return []rbacv1.PolicyRule{
		// The state document, watched by name by every replica.
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{DefaultName}, Verbs: rw},
		// The upstreams' credentials from it, likewise.
		{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{DefaultSecretName}, Verbs: rw},
		{APIGroups: []string{""}, Resources: []string{"configmaps", "secrets"}, Verbs: []string{"create"}},
	}
}
