package agent

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// TestPolicyRulesMatchDeploy: deploy/rbac.yaml grants the forwarder
// exactly PolicyRules, which TestKubeForwardsEdgeServices proves enough.
func TestPolicyRulesMatchDeploy(t *testing.T) {
	t.Parallel()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "deploy", "rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(string(raw), -1) {
		var r rbacv1.ClusterRole
		if err := yaml.Unmarshal([]byte(doc), &r); err != nil {
			t.Fatal(err)
		}
		if r.Kind == "ClusterRole" && r.Name == "k8s-selfhost-repo-forwarder" {
			if !reflect.DeepEqual(r.Rules, PolicyRules()) {
				t.Fatalf("deploy/rbac.yaml grants %+v, want %+v", r.Rules, PolicyRules())
			}
			return
		}
	}
	t.Fatal("deploy/rbac.yaml has no ClusterRole k8s-selfhost-repo-forwarder")
}
