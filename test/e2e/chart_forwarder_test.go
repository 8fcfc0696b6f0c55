package e2e

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// TestChartForwarder renders the chart's node-local forwarder
// (docs/kubernetes.md, "Node access"): with the default nodeAccess auto a
// DaemonSet on the host network, non-root with no capability, probed on
// its loopback status port, its image next to the edge's unless set, and
// RBAC identical to deploy/rbac.yaml's; with nodeAccess nodePort nothing
// of it.
func TestChartForwarder(t *testing.T) {
	t.Parallel()
	h := newHelm(t)
	const ds, role = "DaemonSet/selfhost-forwarder", "ClusterRole/k8s-selfhost-repo-forwarder"

	t.Run("auto", func(t *testing.T) {
		docs := h.template(t, "edge.image.repository=registry.example/team/edge")
		d := decodeDoc[appsv1.DaemonSet](t, docs, ds)
		spec := d.Spec.Template.Spec
		c := spec.Containers[0]
		if c.Image != "registry.example/team/forwarder:0.1.0" {
			t.Errorf("image %s, want the edge's prefix", c.Image)
		}
		if !spec.HostNetwork || spec.ServiceAccountName != "selfhost-forwarder" {
			t.Errorf("hostNetwork %v, serviceAccount %q", spec.HostNetwork, spec.ServiceAccountName)
		}
		psc, sc := spec.SecurityContext, c.SecurityContext
		if psc == nil || !*psc.RunAsNonRoot || *psc.RunAsUser == 0 || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault ||
			sc == nil || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || sc.Capabilities.Add != nil {
			t.Errorf("security context: pod %+v container %+v", psc, sc)
		}
		if cp := decodeDoc[appsv1.Deployment](t, docs, "Deployment/"+chartName).Spec.Template.Spec.Containers[0]; !slices.Contains(cp.Args, "--node-access=auto") {
			t.Errorf("control plane args %q lack --node-access=auto", cp.Args)
		}
		if !slices.Contains(c.Args, "--status-listen=127.0.0.1:9095") {
			t.Errorf("args %q", c.Args)
		}
		if c.StartupProbe == nil || c.StartupProbe.InitialDelaySeconds < 2 {
			t.Errorf("startup probe %+v: want a first try after 2 s (no Warning event on a normal start)", c.StartupProbe)
		}
		for _, p := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
			if p == nil || p.HTTPGet == nil || p.HTTPGet.Host != "127.0.0.1" || p.HTTPGet.Port.IntValue() != 9095 {
				t.Errorf("probe %+v: want HTTP on 127.0.0.1:9095", p)
			}
		}
		if len(c.Ports) != 0 {
			t.Errorf("ports %+v: the forwarder declares none (its listeners follow the edge Services)", c.Ports)
		}

		root, err := harness.RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(filepath.Join(root, "deploy", "rbac.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		want := splitManifests(t, string(raw))
		if w, g := decodeDoc[rbacv1.ClusterRole](t, want, role), decodeDoc[rbacv1.ClusterRole](t, docs, role); !reflect.DeepEqual(w.Rules, g.Rules) {
			t.Errorf("%s rules differ from deploy/rbac.yaml:\n got %+v\nwant %+v", role, g.Rules, w.Rules)
		}
		crb := decodeDoc[rbacv1.ClusterRoleBinding](t, docs, "ClusterRoleBinding/k8s-selfhost-repo-forwarder")
		if sa := []rbacv1.Subject{{Kind: "ServiceAccount", Name: "selfhost-forwarder", Namespace: releaseNS}}; !reflect.DeepEqual(crb.Subjects, sa) ||
			crb.RoleRef != decodeDoc[rbacv1.ClusterRoleBinding](t, want, "ClusterRoleBinding/k8s-selfhost-repo-forwarder").RoleRef {
			t.Errorf("binding %+v", crb)
		}
	})

	t.Run("image set", func(t *testing.T) {
		docs := h.template(t, "nodeAccess=forwarder", "forwarder.image.repository=registry.example/fw", "forwarder.image.tag=v9")
		if c := decodeDoc[appsv1.DaemonSet](t, docs, ds).Spec.Template.Spec.Containers[0]; c.Image != "registry.example/fw:v9" {
			t.Errorf("image %s", c.Image)
		}
	})

	t.Run("nodePort", func(t *testing.T) {
		docs := h.template(t, "nodeAccess=nodePort")
		if cp := decodeDoc[appsv1.Deployment](t, docs, "Deployment/"+chartName).Spec.Template.Spec.Containers[0]; !slices.Contains(cp.Args, "--node-access=nodePort") {
			t.Errorf("control plane args %q lack --node-access=nodePort", cp.Args)
		}
		for _, key := range []string{ds, role, "ServiceAccount/selfhost-forwarder", "ClusterRoleBinding/k8s-selfhost-repo-forwarder"} {
			if _, ok := docs[key]; ok {
				t.Errorf("nodeAccess=nodePort renders %s", key)
			}
		}
	})

	t.Run("invalid", func(t *testing.T) {
		for _, set := range []string{"nodeAccess=iptables", "forwarder.statusPort=80", "forwarder.bogus=1"} {
			if _, err := h.run("template", "selfhost", h.chart, "--kube-version", chartKubeVersion, "--set", set); err == nil {
				t.Errorf("--set %s rendered; want an error", set)
			}
		}
	})
}
