package controller

import (
	"context"
	"maps"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

func TestEdgeAvailabilityTemplate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		extraArgs []string
		replicas  int32
		wantGrace int64
		wantReps  int32
	}{
		{"defaults", nil, 0, 75, 2}, // 5 s drain + 60 s shutdown + 10 s
		{"one replica", nil, 1, 75, 1},
		{"shutdown flags with =", []string{"--shutdown-delay=10s", "--shutdown-timeout=2m"}, 3, 140, 3},
		{"shutdown flags with a separate value", []string{"--shutdown-timeout", "30s"}, 0, 45, 2},
		{"fractional seconds round up", []string{"--shutdown-delay=500ms", "--shutdown-timeout=0s"}, 0, 11, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := testTemplate()
			in.ExtraArgs, in.Replicas = tt.extraArgs, tt.replicas
			tmpl, err := in.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			d := tmpl.desiredDeployment("team-a", 30007)
			if got := *d.Spec.Replicas; got != tt.wantReps {
				t.Errorf("replicas %d, want %d", got, tt.wantReps)
			}
			st := d.Spec.Strategy
			if st.Type != appsv1.RollingUpdateDeploymentStrategyType || st.RollingUpdate == nil ||
				*st.RollingUpdate.MaxUnavailable != intstr.FromInt32(0) || *st.RollingUpdate.MaxSurge != intstr.FromInt32(1) {
				t.Errorf("strategy %+v, want RollingUpdate maxUnavailable 0 maxSurge 1", st)
			}
			ps := d.Spec.Template.Spec
			if got := ptr.Deref(ps.TerminationGracePeriodSeconds, 0); got != tt.wantGrace {
				t.Errorf("terminationGracePeriodSeconds %d, want %d", got, tt.wantGrace)
			}
			aa := ps.Affinity.PodAntiAffinity
			if aa == nil || len(aa.RequiredDuringSchedulingIgnoredDuringExecution) != 0 || len(aa.PreferredDuringSchedulingIgnoredDuringExecution) != 1 {
				t.Fatalf("anti-affinity %+v, want one preferred term", aa)
			}
			term := aa.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm
			if term.TopologyKey != corev1.LabelHostname || !maps.Equal(term.LabelSelector.MatchLabels, PodSelector()) {
				t.Errorf("anti-affinity term %+v, want the edge's pods per hostname", term)
			}
			c := ps.Containers[0]
			sp := c.StartupProbe
			if sp == nil || sp.HTTPGet == nil || sp.HTTPGet.Path != "/healthz" || sp.InitialDelaySeconds < 1 ||
				int64(sp.PeriodSeconds)*int64(sp.FailureThreshold) < 30 {
				t.Errorf("startup probe %+v: want /healthz, a first check after the listener opens, time for slow storage", sp)
			}
			if !slices.Contains(c.Args, "--advertise-address=127.0.0.1:30007") {
				t.Errorf("args %q lack the injector's address as --advertise-address", c.Args)
			}
			pdb := tmpl.desiredPodDisruptionBudget("team-a")
			if pdb.Name != kubecontract.EdgeName || pdb.Namespace != "team-a" || pdb.Spec.MinAvailable != nil ||
				*pdb.Spec.MaxUnavailable != intstr.FromInt32(1) || !maps.Equal(pdb.Spec.Selector.MatchLabels, PodSelector()) {
				t.Errorf("pdb %+v", pdb)
			}
			if d := labelsDrift(pdb.Labels, ManagedLabels()); d != "" {
				t.Errorf("pdb labels: %s", d)
			}
		})
	}
}

func TestEdgeArgsWithoutNodePort(t *testing.T) {
	t.Parallel()
	tmpl, err := testTemplate().withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range tmpl.edgeArgs(0) {
		if n, _ := flagName(a); n == "advertise-address" {
			t.Fatalf("node port unknown, yet %s", a)
		}
	}
}

// TestSyncAvailabilityDrift: the strategy, affinity, grace period, startup
// probe, advertised address and the PodDisruptionBudget are repaired, and
// a moved node port rolls the Deployment's --advertise-address.
func TestSyncAvailabilityDrift(t *testing.T) {
	t.Parallel()
	type ctx = context.Context
	tests := []struct {
		name  string
		drift func(ctx, *env) error
	}{
		{"strategy", func(c ctx, e *env) error {
			return updateDeployment(c, e, func(d *appsv1.Deployment) {
				d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
			})
		}},
		{"affinity removed", func(c ctx, e *env) error {
			return updateDeployment(c, e, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Affinity = nil })
		}},
		{"grace period", func(c ctx, e *env) error {
			return updateDeployment(c, e, func(d *appsv1.Deployment) { d.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr.To[int64](1) })
		}},
		{"startup probe removed", func(c ctx, e *env) error {
			return updateDeployment(c, e, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].StartupProbe = nil })
		}},
		{"pdb deleted", func(c ctx, e *env) error {
			return e.client.PolicyV1().PodDisruptionBudgets("team-a").Delete(c, kubecontract.EdgeName, metav1.DeleteOptions{})
		}},
		{"pdb minAvailable", func(c ctx, e *env) error {
			return update(c, e.client.PolicyV1().PodDisruptionBudgets("team-a"), kubecontract.EdgeName, func(p *policyv1.PodDisruptionBudget) {
				p.Spec.MaxUnavailable, p.Spec.MinAvailable = nil, ptr.To(intstr.FromString("100%"))
			})
		}},
		{"pdb label", func(c ctx, e *env) error {
			return update(c, e.client.PolicyV1().PodDisruptionBudgets("team-a"), kubecontract.EdgeName, func(p *policyv1.PodDisruptionBudget) {
				delete(p.Labels, kubecontract.NameLabel)
			})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, testTemplate(), optedIn("team-a"))
			e.mustSync("team-a")
			if err := tt.drift(e.ctx, e); err != nil {
				t.Fatal(err)
			}
			e.mustSync("team-a")
			o := e.objects("team-a")
			if o.count() != 5 {
				t.Fatalf("%d of 5 objects after repair", o.count())
			}
			if d := deploymentDrift(o.dep, e.c.tmpl.desiredDeployment("team-a", nodePortOf(o.svc))); d != "" {
				t.Errorf("deployment still drifts at %s", d)
			}
			if d := pdbDrift(o.pdb, e.c.tmpl.desiredPodDisruptionBudget("team-a")); d != "" {
				t.Errorf("pdb still drifts at %s", d)
			}
			e.client.ClearActions()
			e.mustSync("team-a")
			if w := e.writes(); len(w) != 0 {
				t.Errorf("not converged after the repair: writes %v", w)
			}
		})
	}

	t.Run("node port change follows into --advertise-address", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, testTemplate(), optedIn("team-a"))
		e.mustSync("team-a")
		old := nodePortOf(e.objects("team-a").svc)
		if err := updateService(e.ctx, e, func(s *corev1.Service) { s.Spec.Ports[0].NodePort = old + 100 }); err != nil {
			t.Fatal(err)
		}
		e.mustSync("team-a")
		args := e.objects("team-a").dep.Spec.Template.Spec.Containers[0].Args
		if want := "--advertise-address=" + EdgeHost(old+100); !slices.Contains(args, want) {
			t.Fatalf("args %q lack %s after the node port moved", args, want)
		}
	})
}
