package uninstall

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/controller"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

// object is what the sweep needs of a listed object.
type object struct {
	meta metav1.ObjectMeta
}

// kind lists the managed objects of one resource called objectName in
// every namespace and deletes one of them. Listing by name (field
// selector metadata.name) is what the control plane's RBAC allows: its
// rules name the objects (resourceNames), not every object of a kind.
type kind struct {
	name       string
	objectName string
	list       func(ctx context.Context, opts metav1.ListOptions) ([]object, error)
	delete     func(ctx context.Context, ns, name string, opts metav1.DeleteOptions) error
}

// listOptions select the managed objects of k.
func (k kind) listOptions() metav1.ListOptions {
	return metav1.ListOptions{
		LabelSelector: ManagedSelector().String(),
		FieldSelector: fields.OneTermEqualSelector("metadata.name", k.objectName).String(),
	}
}

// ManagedSelector selects every object the control plane labels as its
// own: the edges' objects (component edge), the webhook's (component
// webhook) and the state ConfigMap. The chart's objects carry
// managed-by=Helm and are Helm's to delete.
func ManagedSelector() labels.Selector {
	return labels.SelectorFromSet(labels.Set{kubecontract.ManagedByLabel: kubecontract.ManagedByValue})
}

// kinds are the objects the control plane creates in the tenants'
// namespaces, the Deployments first so that edge pods start stopping
// early. Its own objects in the release namespace are deleted by name
// (releaseObjects).
func (r *run) kinds() []kind {
	c := r.o.Client
	return []kind{
		{"deployment", kubecontract.EdgeName, func(ctx context.Context, o metav1.ListOptions) ([]object, error) {
			l, err := c.AppsV1().Deployments("").List(ctx, o)
			if err != nil {
				return nil, err
			}
			return objects(len(l.Items), func(i int) metav1.ObjectMeta { return l.Items[i].ObjectMeta }), nil
		}, func(ctx context.Context, ns, name string, o metav1.DeleteOptions) error {
			return c.AppsV1().Deployments(ns).Delete(ctx, name, o)
		}},
		{"poddisruptionbudget", kubecontract.EdgeName, func(ctx context.Context, o metav1.ListOptions) ([]object, error) {
			l, err := c.PolicyV1().PodDisruptionBudgets("").List(ctx, o)
			if err != nil {
				return nil, err
			}
			return objects(len(l.Items), func(i int) metav1.ObjectMeta { return l.Items[i].ObjectMeta }), nil
		}, func(ctx context.Context, ns, name string, o metav1.DeleteOptions) error {
			return c.PolicyV1().PodDisruptionBudgets(ns).Delete(ctx, name, o)
		}},
		{"service", kubecontract.EdgeName, func(ctx context.Context, o metav1.ListOptions) ([]object, error) {
			l, err := c.CoreV1().Services("").List(ctx, o)
			if err != nil {
				return nil, err
			}
			return objects(len(l.Items), func(i int) metav1.ObjectMeta { return l.Items[i].ObjectMeta }), nil
		}, func(ctx context.Context, ns, name string, o metav1.DeleteOptions) error {
			return c.CoreV1().Services(ns).Delete(ctx, name, o)
		}},
		{"secret", kubecontract.PullSecretName, func(ctx context.Context, o metav1.ListOptions) ([]object, error) {
			l, err := c.CoreV1().Secrets("").List(ctx, o)
			if err != nil {
				return nil, err
			}
			return objects(len(l.Items), func(i int) metav1.ObjectMeta { return l.Items[i].ObjectMeta }), nil
		}, func(ctx context.Context, ns, name string, o metav1.DeleteOptions) error {
			return c.CoreV1().Secrets(ns).Delete(ctx, name, o)
		}},
		{"configmap", controller.CAConfigMapName, func(ctx context.Context, o metav1.ListOptions) ([]object, error) {
			l, err := c.CoreV1().ConfigMaps("").List(ctx, o)
			if err != nil {
				return nil, err
			}
			return objects(len(l.Items), func(i int) metav1.ObjectMeta { return l.Items[i].ObjectMeta }), nil
		}, func(ctx context.Context, ns, name string, o metav1.DeleteOptions) error {
			return c.CoreV1().ConfigMaps(ns).Delete(ctx, name, o)
		}},
		{"serviceaccount", kubecontract.EdgeName, func(ctx context.Context, o metav1.ListOptions) ([]object, error) {
			l, err := c.CoreV1().ServiceAccounts("").List(ctx, o)
			if err != nil {
				return nil, err
			}
			return objects(len(l.Items), func(i int) metav1.ObjectMeta { return l.Items[i].ObjectMeta }), nil
		}, func(ctx context.Context, ns, name string, o metav1.DeleteOptions) error {
			return c.CoreV1().ServiceAccounts(ns).Delete(ctx, name, o)
		}},
	}
}

// objects takes the metadata of a list's n items.
func objects(n int, meta func(int) metav1.ObjectMeta) []object {
	out := make([]object, n)
	for i := range n {
		out[i] = object{meta: meta(i)}
	}
	return out
}

// sweepManaged deletes every object of kinds that ManagedSelector
// selects, in every namespace, each by its UID. It passes again while a pass found
// something, up to maxSweeps: an object replaced between the list and the
// delete (Conflict) is caught by the next pass.
func (r *run) sweepManaged(ctx context.Context) error {
	for pass := 1; ; pass++ {
		found := 0
		for _, k := range r.kinds() {
			opts := k.listOptions()
			objs, err := k.list(ctx, opts)
			if err != nil {
				return fmt.Errorf("list %ss %s labelled %s: %w", k.name, k.objectName, opts.LabelSelector, err)
			}
			for _, o := range objs {
				found++
				err := k.delete(ctx, o.meta.Namespace, o.meta.Name, preconditions(o.meta.UID))
				if apierrors.IsConflict(err) {
					continue // replaced meanwhile: the next pass sees the successor
				}
				if err := r.deleted(k.name, o.meta.Namespace, o.meta.Name, err); err != nil {
					return err
				}
			}
		}
		if found == 0 {
			return nil
		}
		if pass == maxSweeps {
			return fmt.Errorf("managed objects still appear after %d passes; is a control plane still running?", pass)
		}
	}
}
