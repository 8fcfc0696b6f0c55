package controller

import (
	"context"
	"fmt"
	"maps"
	"math"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

// The edge's own shutdown defaults (edge --shutdown-delay and
// --shutdown-timeout): after SIGTERM it keeps serving for the delay while
// its endpoint's removal spreads, then gives in-flight pulls the timeout.
// The pod's grace period must cover both, or kubelet kills a blob
// transfer half-way.
const (
	EdgeShutdownDelay   = 5 * time.Second
	EdgeShutdownTimeout = 60 * time.Second
	// gracePeriodMargin is what the grace period adds to the edge's delay
	// and timeout: the process's own exit after its last request.
	gracePeriodMargin = 10 * time.Second
)

// rolloutStrategy replaces edge pods one at a time and only after the new
// one is ready: a namespace never has fewer ready edges than replicas
// during an update (a changed node port, image or flag).
func rolloutStrategy() appsv1.DeploymentStrategy {
	zero, one := intstr.FromInt32(0), intstr.FromInt32(1)
	return appsv1.DeploymentStrategy{
		Type:          appsv1.RollingUpdateDeploymentStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: &zero, MaxSurge: &one},
	}
}

// spreadAcrossNodes prefers to put the edge's replicas on different nodes,
// so one node going down leaves the namespace an edge. Preferred, not
// required: a one-node cluster still runs every replica.
func spreadAcrossNodes() *corev1.Affinity {
	return &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
		PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
			Weight: 100,
			PodAffinityTerm: corev1.PodAffinityTerm{
				LabelSelector: &metav1.LabelSelector{MatchLabels: PodSelector()},
				TopologyKey:   corev1.LabelHostname,
			},
		}},
	}}
}

// shutdownDurations are the edge's --shutdown-delay and --shutdown-timeout
// as ExtraArgs set them, else the edge's defaults.
func (t EdgeTemplate) shutdownDurations() (delay, timeout time.Duration, err error) {
	delay, timeout = EdgeShutdownDelay, EdgeShutdownTimeout
	for _, f := range []struct {
		name string
		d    *time.Duration
	}{{"shutdown-delay", &delay}, {"shutdown-timeout", &timeout}} {
		v, ok := flagValue(t.ExtraArgs, f.name)
		if !ok {
			continue
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return 0, 0, fmt.Errorf("--%s %q: want a non-negative duration such as 30s", f.name, v)
		}
		*f.d = d
	}
	return delay, timeout, nil
}

// terminationGracePeriod is the edge pod's grace period in seconds: the
// edge's drain delay and shutdown timeout plus a margin. withDefaults has
// checked the flags.
func (t EdgeTemplate) terminationGracePeriod() int64 {
	delay, timeout, _ := t.shutdownDurations()
	return int64(math.Ceil((delay + timeout + gracePeriodMargin).Seconds()))
}

// startupProbe holds the readiness and liveness probes back until the edge
// listens. Kubelet records a Warning event for every failed probe, startup
// probes included, so the first check comes five seconds after the start:
// on a real node with four edges starting at once under load, a one-second
// delay still raced the listener, and so did three seconds with the node's
// two cores busy with other tests. The edge is Ready about as soon (the
// readiness probe waits for the configuration anyway); slow storage gets
// up to a minute.
func (t EdgeTemplate) startupProbe() *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: "/healthz", Port: intstr.FromInt32(t.ContainerPort), Scheme: corev1.URISchemeHTTP,
		}},
		InitialDelaySeconds: 5,
		TimeoutSeconds:      1,
		PeriodSeconds:       1,
		SuccessThreshold:    1,
		FailureThreshold:    60,
	}
}

// desiredPodDisruptionBudget lets voluntary disruptions (node drains,
// cluster upgrades) take one edge pod at a time. With one replica it still
// allows the eviction, so a drain never blocks on an edge.
func (t EdgeTemplate) desiredPodDisruptionBudget(ns string) *policyv1.PodDisruptionBudget {
	one := intstr.FromInt32(1)
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: t.meta(ns, kubecontract.EdgeName),
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable: &one,
			Selector:       &metav1.LabelSelector{MatchLabels: PodSelector()},
		},
	}
}

// flagValue returns the value of the last Go-style flag name in args
// ("--x=v", "-x=v", or "--x v").
func flagValue(args []string, name string) (string, bool) {
	var val string
	var found bool
	for i, a := range args {
		if n, ok := flagName(a); !ok || n != name {
			continue
		}
		if _, v, hasEq := strings.Cut(a, "="); hasEq {
			val, found = v, true
		} else if i+1 < len(args) {
			val, found = args[i+1], true
		}
	}
	return val, found
}

// ensurePodDisruptionBudget creates or repairs the edge's
// PodDisruptionBudget.
func (c *Controller) ensurePodDisruptionBudget(ctx context.Context, ns string) error {
	want := c.tmpl.desiredPodDisruptionBudget(ns)
	api := c.client.PolicyV1().PodDisruptionBudgets(ns)
	cur, created, err := current(ctx, "poddisruptionbudget", ns, want.Name, want,
		c.pdbs.PodDisruptionBudgets(ns).Get,
		func(ctx context.Context, o *policyv1.PodDisruptionBudget) (*policyv1.PodDisruptionBudget, error) {
			return api.Create(ctx, o, metav1.CreateOptions{})
		}, api.Get)
	if err != nil || created {
		c.logCreated(err, created, ns, "poddisruptionbudget", want.Name)
		return err
	}
	drift := pdbDrift(cur, want)
	if drift == "" {
		return nil
	}
	upd := cur.DeepCopy()
	upd.Labels = mergeLabels(upd.Labels, want.Labels)
	upd.Spec.MaxUnavailable = want.Spec.MaxUnavailable
	upd.Spec.MinAvailable = nil
	upd.Spec.Selector = want.Spec.Selector
	if _, err := api.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update poddisruptionbudget %s/%s: %w", ns, want.Name, err)
	}
	c.logRepaired(ns, "poddisruptionbudget", want.Name, drift)
	return nil
}

// pdbDrift names the first owned field of cur that differs from want
// ("" for none).
func pdbDrift(cur, want *policyv1.PodDisruptionBudget) string {
	if d := labelsDrift(cur.Labels, want.Labels); d != "" {
		return d
	}
	switch {
	case !ptr.Equal(cur.Spec.MaxUnavailable, want.Spec.MaxUnavailable):
		return "spec.maxUnavailable"
	case cur.Spec.MinAvailable != nil:
		return "spec.minAvailable"
	case cur.Spec.Selector == nil || !maps.Equal(cur.Spec.Selector.MatchLabels, want.Spec.Selector.MatchLabels) ||
		len(cur.Spec.Selector.MatchExpressions) != 0:
		return "spec.selector"
	}
	return ""
}
