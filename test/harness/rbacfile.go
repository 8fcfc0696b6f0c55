package harness

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// DeployRBACRules reads the repository's deploy/rbac.yaml and returns the
// rules of each Role and ClusterRole in it, keyed "Kind/name" (for example
// "ClusterRole/k8s-selfhost-repo-forwarder"), so a package's test can check
// that the file grants exactly the rules its code says it needs.
func DeployRBACRules(t testing.TB) map[string][]rbacv1.PolicyRule {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "deploy", "rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	rules := map[string][]rbacv1.PolicyRule{}
	for i, doc := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(string(raw), -1) {
		var r struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Rules []rbacv1.PolicyRule `json:"rules"`
		}
		if err := yaml.Unmarshal([]byte(doc), &r); err != nil {
			t.Fatalf("deploy/rbac.yaml document %d: %v", i, err)
		}
		if r.Kind == "Role" || r.Kind == "ClusterRole" {
			rules[r.Kind+"/"+r.Metadata.Name] = r.Rules
		}
	}
	return rules
}
