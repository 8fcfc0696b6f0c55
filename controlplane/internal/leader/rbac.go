package leader

import rbacv1 "k8s.io/api/rbac/v1"

// PolicyRules are the permissions an elector needs in the Lease's
// namespace (a Role there), each with its reason.
func PolicyRules(leaseName string) []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		// The first candidate creates the Lease; create cannot be limited
		// to one name in RBAC.
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}},
		// Campaigning reads the Lease, renewing and releasing update it:
		// only this one Lease.
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{leaseName}, Verbs: []string{"get", "update"}},
	}
}
