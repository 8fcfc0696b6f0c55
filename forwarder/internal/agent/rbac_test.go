package agent

import (
	"reflect"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// TestPolicyRulesMatchDeploy: deploy/rbac.yaml grants the forwarder
// exactly PolicyRules, which TestKubeForwardsEdgeServices proves enough.
func TestPolicyRulesMatchDeploy(t *testing.T) {
	t.Parallel()
	got, ok := harness.DeployRBACRules(t)["ClusterRole/k8s-selfhost-repo-forwarder"]
	if !ok {
		t.Fatal("deploy/rbac.yaml has no ClusterRole k8s-selfhost-repo-forwarder")
	}
	if !reflect.DeepEqual(got, PolicyRules()) {
		t.Fatalf("deploy/rbac.yaml grants %+v, want %+v", got, PolicyRules())
	}
}
