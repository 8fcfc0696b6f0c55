package nodeaccess

import (
	"reflect"
	"slices"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// TestPolicyRulesInDeploy: deploy/rbac.yaml grants the control plane
// PolicyRules, which TestKubeGate proves enough: the cluster rules in its
// ClusterRole, the pod rules in its Role of the release namespace.
func TestPolicyRulesInDeploy(t *testing.T) {
	t.Parallel()
	granted := harness.DeployRBACRules(t)
	cluster, ns := PolicyRules()
	for key, want := range map[string][]rbacv1.PolicyRule{
		"ClusterRole/k8s-selfhost-repo-controlplane": cluster,
		"Role/k8s-selfhost-repo-controlplane":        ns,
	} {
		for _, w := range want {
			if !slices.ContainsFunc(granted[key], func(g rbacv1.PolicyRule) bool { return reflect.DeepEqual(g, w) }) {
				t.Errorf("deploy/rbac.yaml %s lacks %+v", key, w)
			}
		}
	}
}
