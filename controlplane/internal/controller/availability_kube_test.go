package controller

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// TestKubeEdgeAvailability: against a real kube-apiserver, as a
// ServiceAccount holding exactly PolicyRules, the edge's
// PodDisruptionBudget is created with the edge, repaired when deleted or
// edited, and deleted with the label; the Deployment advertises the
// Service's node port and is spread, rolled and graced as desired.
func TestKubeEdgeAvailability(t *testing.T) {
	t.Parallel()
	k := harness.StartKube(t)
	admin := k.Client
	kc := startKubeController(t, k, controlPlaneClient(t, k, "controlplane-availability"))
	kc.run()
	ctx := t.Context()
	pdbs := admin.PolicyV1().PodDisruptionBudgets("team-p")

	createNamespace(t, admin, optedIn("team-p"))
	waitFor(t, "team-p's edge", func() bool { return edgeReady(t, admin, "team-p") })
	o := objectsOf(t, admin, "team-p")
	if o.pdb.Spec.MaxUnavailable == nil || *o.pdb.Spec.MaxUnavailable != intstr.FromInt32(1) || o.pdb.Spec.MinAvailable != nil {
		t.Errorf("pdb spec %+v, want maxUnavailable 1", o.pdb.Spec)
	}
	dep := o.dep
	if want := "--advertise-address=" + EdgeHost(o.svc.Spec.Ports[0].NodePort); !slices.Contains(dep.Spec.Template.Spec.Containers[0].Args, want) {
		t.Errorf("edge args %q lack %s", dep.Spec.Template.Spec.Containers[0].Args, want)
	}
	if *dep.Spec.Replicas != DefaultReplicas || dep.Spec.Strategy.RollingUpdate == nil ||
		dep.Spec.Template.Spec.Affinity == nil || ptr.Deref(dep.Spec.Template.Spec.TerminationGracePeriodSeconds, 0) != 75 ||
		dep.Spec.Template.Spec.Containers[0].StartupProbe == nil {
		t.Errorf("stored deployment lacks its availability settings: %+v", dep.Spec)
	}

	t.Run("deleted PodDisruptionBudget comes back", func(t *testing.T) {
		old := objectsOf(t, admin, "team-p").pdb
		if err := pdbs.Delete(ctx, kubecontract.EdgeName, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "a new PodDisruptionBudget", func() bool {
			p := objectsOf(t, admin, "team-p").pdb
			return p != nil && p.UID != old.UID
		})
	})

	t.Run("edited PodDisruptionBudget is repaired", func(t *testing.T) {
		p, err := pdbs.Get(ctx, kubecontract.EdgeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Spec.MaxUnavailable, p.Spec.MinAvailable = nil, ptr.To(intstr.FromString("100%"))
		if _, err := pdbs.Update(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		want := kc.c.tmpl.desiredPodDisruptionBudget("team-p")
		waitFor(t, "the repaired PodDisruptionBudget", func() bool {
			p := objectsOf(t, admin, "team-p").pdb
			return p != nil && pdbDrift(p, want) == ""
		})
	})

	t.Run("label removed deletes it with the edge", func(t *testing.T) {
		editNamespace(t, admin, "team-p", func(ns *corev1.Namespace) { delete(ns.Labels, kubecontract.OptInLabel) })
		waitFor(t, "team-p's edge to go", func() bool { return objectsOf(t, admin, "team-p").count() == 0 })
		if l, err := pdbs.List(ctx, metav1.ListOptions{}); err != nil || len(l.Items) != 0 {
			t.Fatalf("pdbs %v, %v", l, err)
		}
	})
}
