package controller

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// ensureDeployment creates or repairs the edge's Deployment, whose
// Service has nodePort.
func (c *Controller) ensureDeployment(ctx context.Context, ns string, nodePort int32) error {
	want := c.desiredDeployment(ns, nodePort)
	api := c.client.AppsV1().Deployments(ns)
	create := func(ctx context.Context, o *appsv1.Deployment) (*appsv1.Deployment, error) {
		return api.Create(ctx, o, metav1.CreateOptions{})
	}
	cur, created, err := current(ctx, "deployment", ns, want.Name, want, c.deployments.Deployments(ns).Get, create, api.Get)
	if err != nil || created {
		c.logCreated(err, created, ns, "deployment", want.Name)
		return err
	}
	if !equality.Semantic.DeepEqual(cur.Spec.Selector, want.Spec.Selector) {
		// The selector is immutable: replace the Deployment.
		if err := api.Delete(ctx, cur.Name, deleteOptions(cur.UID)); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete deployment %s/%s with a foreign selector: %w", ns, cur.Name, err)
		}
		if _, err := create(ctx, want); err != nil {
			return fmt.Errorf("create deployment %s/%s: %w", ns, want.Name, err)
		}
		c.logRepaired(ns, "deployment", want.Name, "spec.selector")
		return nil
	}
	drift := deploymentDrift(cur, want)
	if drift == "" {
		return nil
	}
	upd := cur.DeepCopy()
	applyDeployment(upd, want)
	if _, err := api.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update deployment %s/%s: %w", ns, want.Name, err)
	}
	c.logRepaired(ns, "deployment", want.Name, drift)
	return nil
}

// deploymentDrift names the first owned field of cur that differs from
// want ("" for none). Owned: the labels of the controller, replicas, the
// rollout strategy, the pod template's labels of the controller, its
// service account, token automounting, service links, pod security
// context, affinity, termination grace period, the edge container (whole)
// and the controller's volumes. Anything else (other containers,
// annotations such as kubectl's restartedAt, tolerations) is left alone.
func deploymentDrift(cur, want *appsv1.Deployment) string {
	if d := labelsDrift(cur.Labels, want.Labels); d != "" {
		return d
	}
	if !ptr.Equal(cur.Spec.Replicas, want.Spec.Replicas) {
		return "spec.replicas"
	}
	if !equality.Semantic.DeepEqual(cur.Spec.Strategy, want.Spec.Strategy) {
		return "spec.strategy"
	}
	if d := labelsDrift(cur.Spec.Template.Labels, want.Spec.Template.Labels); d != "" {
		return "spec.template." + d
	}
	ps, ws := &cur.Spec.Template.Spec, &want.Spec.Template.Spec
	switch {
	case ps.ServiceAccountName != ws.ServiceAccountName:
		return "spec.template.spec.serviceAccountName"
	case !ptr.Equal(ps.AutomountServiceAccountToken, ws.AutomountServiceAccountToken):
		return "spec.template.spec.automountServiceAccountToken"
	case !ptr.Equal(ps.EnableServiceLinks, ws.EnableServiceLinks):
		return "spec.template.spec.enableServiceLinks"
	case !equality.Semantic.DeepEqual(ps.SecurityContext, ws.SecurityContext):
		return "spec.template.spec.securityContext"
	case !equality.Semantic.DeepEqual(ps.Affinity, ws.Affinity):
		return "spec.template.spec.affinity"
	case !ptr.Equal(ps.TerminationGracePeriodSeconds, ws.TerminationGracePeriodSeconds):
		return "spec.template.spec.terminationGracePeriodSeconds"
	}
	for _, w := range ws.Containers {
		i := containerIndex(ps.Containers, w.Name)
		if i < 0 {
			return "spec.template.spec.containers[" + w.Name + "]"
		}
		if d := containerDrift(&ps.Containers[i], &w); d != "" {
			return "spec.template.spec.containers[" + w.Name + "]." + d
		}
	}
	for _, w := range ws.Volumes {
		i := volumeIndex(ps.Volumes, w.Name)
		if i < 0 || !equality.Semantic.DeepEqual(ps.Volumes[i], w) {
			return "spec.template.spec.volumes[" + w.Name + "]"
		}
	}
	return ""
}

// containerDrift names the first field of cur that differs from want.
// want sets every field the apiserver defaults, so the whole container is
// compared.
func containerDrift(cur, want *corev1.Container) string {
	fields := []struct {
		name      string
		have, got any
	}{
		{"image", cur.Image, want.Image},
		{"imagePullPolicy", cur.ImagePullPolicy, want.ImagePullPolicy},
		{"args", cur.Args, want.Args},
		{"env", cur.Env, want.Env},
		{"ports", cur.Ports, want.Ports},
		{"resources", cur.Resources, want.Resources},
		{"volumeMounts", cur.VolumeMounts, want.VolumeMounts},
		{"startupProbe", cur.StartupProbe, want.StartupProbe},
		{"readinessProbe", cur.ReadinessProbe, want.ReadinessProbe},
		{"livenessProbe", cur.LivenessProbe, want.LivenessProbe},
		{"securityContext", cur.SecurityContext, want.SecurityContext},
	}
	for _, f := range fields {
		if !equality.Semantic.DeepEqual(f.have, f.got) {
			return f.name
		}
	}
	if !equality.Semantic.DeepEqual(cur, want) {
		return "(other fields)"
	}
	return ""
}

// applyDeployment sets the owned fields of want on upd.
func applyDeployment(upd, want *appsv1.Deployment) {
	upd.Labels = mergeLabels(upd.Labels, want.Labels)
	upd.Spec.Replicas = want.Spec.Replicas
	upd.Spec.Strategy = want.Spec.Strategy
	upd.Spec.Template.Labels = mergeLabels(upd.Spec.Template.Labels, want.Spec.Template.Labels)
	ps, ws := &upd.Spec.Template.Spec, &want.Spec.Template.Spec
	ps.ServiceAccountName = ws.ServiceAccountName
	ps.DeprecatedServiceAccount = ws.ServiceAccountName
	ps.AutomountServiceAccountToken = ws.AutomountServiceAccountToken
	ps.EnableServiceLinks = ws.EnableServiceLinks
	ps.SecurityContext = ws.SecurityContext
	ps.Affinity = ws.Affinity
	ps.TerminationGracePeriodSeconds = ws.TerminationGracePeriodSeconds
	for _, w := range ws.Containers {
		if i := containerIndex(ps.Containers, w.Name); i >= 0 {
			ps.Containers[i] = w
		} else {
			ps.Containers = append([]corev1.Container{w}, ps.Containers...)
		}
	}
	for _, w := range ws.Volumes {
		if i := volumeIndex(ps.Volumes, w.Name); i >= 0 {
			ps.Volumes[i] = w
		} else {
			ps.Volumes = append(ps.Volumes, w)
		}
	}
}

func containerIndex(cs []corev1.Container, name string) int {
	for i := range cs {
		if cs[i].Name == name {
			return i
		}
	}
	return -1
}

func volumeIndex(vs []corev1.Volume, name string) int {
	for i := range vs {
		if vs[i].Name == name {
			return i
		}
	}
	return -1
}
