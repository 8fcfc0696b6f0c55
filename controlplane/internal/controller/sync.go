package controller

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

// errGone ends a sync without error: the namespace is gone or terminating.
var errGone = errors.New("namespace gone or terminating")

// sync brings namespace name's edge to the desired state: present and in
// shape when the namespace is opted in, absent otherwise. A namespace
// deleted before or during the sync ends it without error.
func (c *Controller) sync(ctx context.Context, name string) error {
	ns, err := c.namespaces.Get(name)
	if apierrors.IsNotFound(err) {
		// Kubernetes' namespace deletion removes the objects.
		c.forgetWrongValue(name)
		return nil
	}
	if err != nil {
		return fmt.Errorf("get namespace %s: %w", name, err)
	}
	if !c.optedIn(ns) {
		reason := "namespace terminating"
		if ns.DeletionTimestamp == nil {
			reason = c.notOptedIn(ns)
		}
		return c.cleanup(ctx, name, reason)
	}
	c.forgetWrongValue(name)
	c.checkUpstreamCredentials(name)
	err = c.reconcile(ctx, name)
	if isGone(err) {
		c.log.Debug("namespace went away during sync", "namespace", name, "err", err)
		return nil
	}
	return err
}

// isGone reports an error of a write into a namespace that no longer
// exists or is terminating.
func isGone(err error) bool {
	return errors.Is(err, errGone) || apierrors.IsNotFound(err) ||
		apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause)
}

// notOptedIn logs a wrong opt-in value once per namespace and value, and
// returns the reason for the cleanup.
func (c *Controller) notOptedIn(ns *corev1.Namespace) string {
	v, has := ns.Labels[kubecontract.OptInLabel]
	if !has {
		c.forgetWrongValue(ns.Name)
		return "opt-in label absent"
	}
	c.mu.Lock()
	logged, seen := c.wrongValue[ns.Name]
	c.wrongValue[ns.Name] = v
	c.mu.Unlock()
	if !seen || logged != v {
		c.log.Warn("namespace opt-in label has a wrong value; not opted in",
			"namespace", ns.Name, "label", kubecontract.OptInLabel, "value", v, "want", kubecontract.OptInValue)
	}
	return "opt-in label value is not " + kubecontract.OptInValue
}

func (c *Controller) forgetWrongValue(ns string) {
	c.mu.Lock()
	delete(c.wrongValue, ns)
	c.mu.Unlock()
}

// reconcile creates or repairs the five objects of an opted-in namespace.
func (c *Controller) reconcile(ctx context.Context, ns string) error {
	if err := c.ensureServiceAccount(ctx, ns); err != nil {
		return err
	}
	secret, err := c.secrets.Secrets(ns).Get(kubecontract.PullSecretName)
	switch {
	case apierrors.IsNotFound(err):
		secret = nil
	case err != nil:
		return fmt.Errorf("get secret %s/%s: %w", ns, kubecontract.PullSecretName, err)
	}
	nodePort, err := c.ensureService(ctx, ns, rememberedNodePort(secret))
	if err != nil {
		return err
	}
	if err := c.ensureSecret(ctx, ns, secret, nodePort); err != nil {
		return err
	}
	// Before the Deployment, whose edge mounts it.
	if err := c.ensureCAConfigMap(ctx, ns); err != nil {
		return err
	}
	// After the Service: the Deployment's --advertise-address names its
	// node port, and follows it when it changes.
	if err := c.ensureDeployment(ctx, ns, nodePort); err != nil {
		return err
	}
	return c.ensurePodDisruptionBudget(ctx, ns)
}

// cleanup deletes the controller's objects in ns (only those
// ManagedSelector selects: the listers see nothing else).
func (c *Controller) cleanup(ctx context.Context, ns, reason string) error {
	type victim struct {
		kind string
		obj  metav1.Object
		del  func(ctx context.Context, name string, opts metav1.DeleteOptions) error
	}
	// First: a namespace left with only this ConfigMap would not be
	// found again after a restart.
	if err := c.deleteCAConfigMap(ctx, ns, reason); err != nil {
		return err
	}
	var victims []victim
	if o, err := c.pdbs.PodDisruptionBudgets(ns).Get(kubecontract.EdgeName); err == nil {
		victims = append(victims, victim{"poddisruptionbudget", o, c.client.PolicyV1().PodDisruptionBudgets(ns).Delete})
	}
	if o, err := c.deployments.Deployments(ns).Get(kubecontract.EdgeName); err == nil {
		victims = append(victims, victim{"deployment", o, c.client.AppsV1().Deployments(ns).Delete})
	}
	if o, err := c.services.Services(ns).Get(kubecontract.EdgeName); err == nil {
		victims = append(victims, victim{"service", o, c.client.CoreV1().Services(ns).Delete})
	}
	if o, err := c.secrets.Secrets(ns).Get(kubecontract.PullSecretName); err == nil {
		victims = append(victims, victim{"secret", o, c.client.CoreV1().Secrets(ns).Delete})
	}
	if o, err := c.serviceAccounts.ServiceAccounts(ns).Get(kubecontract.EdgeName); err == nil {
		victims = append(victims, victim{"serviceaccount", o, c.client.CoreV1().ServiceAccounts(ns).Delete})
	}
	for _, v := range victims {
		if !ManagedSelector().Matches(labels.Set(v.obj.GetLabels())) {
			continue
		}
		if err := v.del(ctx, v.obj.GetName(), deleteOptions(v.obj.GetUID())); err != nil {
			if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
				continue // gone already, or replaced (its own event follows)
			}
			return fmt.Errorf("delete %s %s/%s: %w", v.kind, ns, v.obj.GetName(), err)
		}
		c.log.Info("deleted edge object", "namespace", ns, "kind", v.kind, "name", v.obj.GetName(), "reason", reason)
	}
	return nil
}

// deleteOptions deletes exactly the object with uid (not a successor
// created meanwhile), its dependents in the background.
func deleteOptions(uid types.UID) metav1.DeleteOptions {
	bg := metav1.DeletePropagationBackground
	return metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}, PropagationPolicy: &bg}
}

// event records a Kubernetes event on obj when a recorder is configured.
func (c *Controller) event(obj runtime.Object, eventType, reason, format string, args ...any) {
	if c.recorder == nil {
		return
	}
	c.recorder.Eventf(obj, eventType, reason, format, args...)
}
