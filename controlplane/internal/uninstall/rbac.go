package uninstall

import (
	"cmp"

	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config/configmapstate"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

// ClusterPolicyRules are what Run needs cluster-wide beyond the
// controller's own rules (controller.PolicyRules, which already allow
// listing and deleting the edges' Deployments, Services, pull Secrets,
// CA ConfigMaps, ServiceAccounts and PodDisruptionBudgets everywhere, by
// their names), each with its reason.
func ClusterPolicyRules(webhookConfiguration string) []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		// The injector's webhook configuration, by name only.
		{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"},
			ResourceNames: []string{webhookConfiguration}, Verbs: []string{"get", "delete"}},
	}
}

// NamespacePolicyRules are what Run needs in the release namespace beyond
// leader.PolicyRules and configmapstate.PolicyRules, each with its
// reason; o names the objects (empty names: the defaults of Options).
func NamespacePolicyRules(o Options) []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		// Scaling the control plane to zero before anything is deleted.
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"},
			ResourceNames: []string{cmp.Or(o.Deployment, DefaultDeployment)}, Verbs: []string{"get", "update"}},
		// Waiting until the control plane's pods are gone.
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list"}},
		// The leader Lease, by name only.
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"},
			ResourceNames: []string{cmp.Or(o.Lease, kubecontract.LeaseName)}, Verbs: []string{"delete"}},
		// The runtime state and the webhook's TLS Secret, by name only.
		{APIGroups: []string{""}, Resources: []string{"configmaps"},
			ResourceNames: []string{cmp.Or(o.StateConfigMap, configmapstate.DefaultName)}, Verbs: []string{"delete"}},
		{APIGroups: []string{""}, Resources: []string{"secrets"},
			ResourceNames: []string{cmp.Or(o.CredentialsSecret, configmapstate.DefaultSecretName), cmp.Or(o.WebhookSecret, DefaultWebhookSecret)},
			Verbs:         []string{"delete"}},
	}
}
