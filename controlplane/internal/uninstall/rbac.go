package uninstall

import rbacv1 "k8s.io/api/rbac/v1"

// ClusterPolicyRules are what Run needs cluster-wide beyond the
// controller's own rules (controller.PolicyRules, which already allow
// listing and deleting the edges' Deployments, Services, Secrets,
// ServiceAccounts and PodDisruptionBudgets everywhere, and updating the
// control plane's Deployment to scale it), each with its reason.
func ClusterPolicyRules(webhookConfiguration string) []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		// The managed ConfigMaps (each tenant's CA ConfigMap, the state
		// ConfigMap) are found by label in every namespace.
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"list", "delete"}},
		// The injector's webhook configuration, by name only.
		{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"},
			ResourceNames: []string{webhookConfiguration}, Verbs: []string{"get", "delete"}},
	}
}

// NamespacePolicyRules are what Run needs in the release namespace beyond
// leader.PolicyRules, each with its reason.
func NamespacePolicyRules(lease string) []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		// Waiting until the control plane's pods are gone.
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list"}},
		// The leader Lease, by name only.
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{lease}, Verbs: []string{"delete"}},
	}
}
