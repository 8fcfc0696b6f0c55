package nodeaccess

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// TestPolicyRulesInDeploy: deploy/rbac.yaml grants the control plane
// PolicyRules, which TestKubeGate proves enough: the cluster rules in its
// ClusterRole, the pod rules in its Role of the release namespace.
func TestPolicyRulesInDeploy(t *testing.T) {
	t.Parallel()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "deploy", "rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	granted := map[string][]rbacv1.PolicyRule{}
	for _, doc := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(string(raw), -1) {
		var r struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Rules []rbacv1.PolicyRule `json:"rules"`
		}
		if err := yaml.Unmarshal([]byte(doc), &r); err != nil {
			t.Fatal(err)
		}
		granted[r.Kind+"/"+r.Metadata.Name] = r.Rules
	}
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
