package leader

import rbacv1 "k8s.io/api/rbac/v1"

// PolicyRules are the permissions an elector needs in the Lease's
// namespace (a Role there): create cannot be limited to one name in RBAC,
// get and update can.
func PolicyRules(leaseName string) []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{leaseName}, Verbs: []string{"get", "update"}},
	}
}
