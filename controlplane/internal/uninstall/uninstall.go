// Package uninstall removes everything the in-cluster control plane
// created at run time, for `helm uninstall` (the chart's pre-delete hook
// runs `controlplane cleanup`, docs/kubernetes.md "Uninstalling"): the
// injector's MutatingWebhookConfiguration, which otherwise keeps the
// apiserver calling a webhook that no longer exists on every pod create
// in an opted-in namespace; every object labelled
// app.kubernetes.io/managed-by=k8s-selfhost-repo-controlplane in every
// namespace (the tenants' edges, their pull Secrets, CA ConfigMaps and
// PodDisruptionBudgets; in the release namespace the state ConfigMap and
// credentials Secret and the webhook's TLS Secret); and the leader Lease.
// Every object is found by its name, which is what the control plane's
// RBAC grants (deploy/rbac.yaml).
//
// Order matters. The control plane's replicas repair what is deleted
// (the leader recreates edges, every replica recreates the webhook
// configuration), so Run first scales the control plane's Deployment to
// zero and waits until its pods are gone, and only then deletes. It runs
// while the chart's RBAC still exists, as the control plane's
// ServiceAccount.
package uninstall

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config/configmapstate"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

// Defaults of Options.
const (
	DefaultDeployment           = "selfhost-controlplane"
	DefaultWebhookConfiguration = "k8s-selfhost-repo-injector"
	DefaultWebhookSecret        = "k8s-selfhost-repo-webhook-tls"
	DefaultPollInterval         = time.Second
	// maxSweeps bounds the passes over the managed objects: one normally
	// suffices; another catches an object replaced between list and delete.
	maxSweeps = 5
)

// Options configure Run. Client and Namespace are required.
type Options struct {
	Client kubernetes.Interface
	// Namespace is the release namespace (Deployment, Lease, webhook
	// Secret).
	Namespace string
	// Deployment is the control plane's Deployment, scaled to zero first
	// (default DefaultDeployment). A missing one is not an error.
	Deployment string
	// WebhookConfiguration, WebhookSecret and Lease name the control
	// plane's own objects (defaults above and kubecontract.LeaseName).
	WebhookConfiguration string
	WebhookSecret        string
	Lease                string
	// StateConfigMap and CredentialsSecret name the runtime state in the
	// release namespace (defaults configmapstate.DefaultName and
	// configmapstate.DefaultSecretName); deleted when they carry the
	// control plane's managed-by label.
	StateConfigMap    string
	CredentialsSecret string
	// PollInterval is how often Run looks whether the control plane's pods
	// are gone (default DefaultPollInterval).
	PollInterval time.Duration
	Logger       *slog.Logger
}

// Report says what Run deleted, as "kind namespace/name".
type Report struct {
	Deleted []string
}

// Run stops the control plane and deletes what it created; see the
// package comment. It is idempotent: a second run finds nothing and
// succeeds. ctx bounds the whole run (the hook's timeout).
func Run(ctx context.Context, o Options) (Report, error) {
	if o.Client == nil || o.Namespace == "" {
		return Report{}, errors.New("uninstall: Client and Namespace are required")
	}
	o.Deployment = cmp.Or(o.Deployment, DefaultDeployment)
	o.WebhookConfiguration = cmp.Or(o.WebhookConfiguration, DefaultWebhookConfiguration)
	o.WebhookSecret = cmp.Or(o.WebhookSecret, DefaultWebhookSecret)
	o.Lease = cmp.Or(o.Lease, kubecontract.LeaseName)
	o.StateConfigMap = cmp.Or(o.StateConfigMap, configmapstate.DefaultName)
	o.CredentialsSecret = cmp.Or(o.CredentialsSecret, configmapstate.DefaultSecretName)
	o.PollInterval = cmp.Or(o.PollInterval, DefaultPollInterval)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	r := &run{o: o, log: o.Logger.With("component", "uninstall")}
	if err := r.stopControlPlane(ctx); err != nil {
		return r.report, err
	}
	steps := []func(context.Context) error{r.deleteWebhookConfiguration, r.sweepManaged, r.deleteState, r.deleteWebhookSecret, r.deleteLease}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return r.report, err
		}
	}
	r.log.Info("uninstall cleanup done", "deleted", len(r.report.Deleted))
	return r.report, nil
}

type run struct {
	o      Options
	log    *slog.Logger
	report Report
}

// stopControlPlane scales the control plane's Deployment to zero and waits
// until none of its pods is left, so that no replica recreates what the
// next steps delete. A terminating replica releases its Lease on the way
// out (RBAC still exists).
func (r *run) stopControlPlane(ctx context.Context) error {
	api := r.o.Client.AppsV1().Deployments(r.o.Namespace)
	var dep *appsv1.Deployment
	for {
		d, err := api.Get(ctx, r.o.Deployment, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			r.log.Info("control plane deployment not found; nothing to stop", "deployment", r.ref(r.o.Deployment))
			return nil
		}
		if err != nil {
			return fmt.Errorf("get deployment %s: %w", r.ref(r.o.Deployment), err)
		}
		dep = d
		if ptr.Deref(d.Spec.Replicas, 1) == 0 {
			break
		}
		d.Spec.Replicas = ptr.To[int32](0)
		_, err = api.Update(ctx, d, metav1.UpdateOptions{})
		if err == nil {
			r.log.Info("scaled the control plane to 0 replicas", "deployment", r.ref(r.o.Deployment))
			break
		}
		if !apierrors.IsConflict(err) {
			return fmt.Errorf("scale deployment %s to 0: %w", r.ref(r.o.Deployment), err)
		}
	}
	sel, err := metav1.LabelSelectorAsSelector(dep.Spec.Selector)
	if err != nil || sel.Empty() {
		return fmt.Errorf("deployment %s: selector %v: %w", r.ref(r.o.Deployment), dep.Spec.Selector, cmp.Or(err, errors.New("empty")))
	}
	return r.waitPodsGone(ctx, sel)
}

func (r *run) waitPodsGone(ctx context.Context, sel labels.Selector) error {
	pods := r.o.Client.CoreV1().Pods(r.o.Namespace)
	logged := -1
	for {
		list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
		if err != nil {
			return fmt.Errorf("list control plane pods in %s: %w", r.o.Namespace, err)
		}
		n := len(list.Items)
		if n == 0 {
			r.log.Info("control plane pods gone")
			return nil
		}
		if n != logged {
			r.log.Info("waiting for the control plane's pods to stop", "pods", n, "selector", sel.String())
			logged = n
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %d control plane pod(s) in %s to stop: %w", n, r.o.Namespace, ctx.Err())
		case <-time.After(r.o.PollInterval):
		}
	}
}

func (r *run) deleteWebhookConfiguration(ctx context.Context) error {
	api := r.o.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	cur, err := api.Get(ctx, r.o.WebhookConfiguration, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get mutatingwebhookconfiguration %s: %w", r.o.WebhookConfiguration, err)
	}
	return r.deleted("mutatingwebhookconfiguration", "", cur.Name, api.Delete(ctx, cur.Name, preconditions(cur.UID)))
}

// deleteState deletes the runtime state's ConfigMap and credentials
// Secret in the release namespace, by name (the control plane's RBAC
// names them), each only when it carries the managed-by label.
func (r *run) deleteState(ctx context.Context) error {
	cms := r.o.Client.CoreV1().ConfigMaps(r.o.Namespace)
	cm, err := cms.Get(ctx, r.o.StateConfigMap, metav1.GetOptions{})
	switch {
	case err == nil && ManagedSelector().Matches(labels.Set(cm.Labels)):
		if err := r.deleted("configmap", r.o.Namespace, cm.Name, cms.Delete(ctx, cm.Name, preconditions(cm.UID))); err != nil {
			return err
		}
	case err != nil && !apierrors.IsNotFound(err):
		return fmt.Errorf("get configmap %s: %w", r.ref(r.o.StateConfigMap), err)
	}
	secs := r.o.Client.CoreV1().Secrets(r.o.Namespace)
	sec, err := secs.Get(ctx, r.o.CredentialsSecret, metav1.GetOptions{})
	switch {
	case err == nil && ManagedSelector().Matches(labels.Set(sec.Labels)):
		return r.deleted("secret", r.o.Namespace, sec.Name, secs.Delete(ctx, sec.Name, preconditions(sec.UID)))
	case err != nil && !apierrors.IsNotFound(err):
		return fmt.Errorf("get secret %s: %w", r.ref(r.o.CredentialsSecret), err)
	}
	return nil
}

func (r *run) deleteWebhookSecret(ctx context.Context) error {
	api := r.o.Client.CoreV1().Secrets(r.o.Namespace)
	return r.deleted("secret", r.o.Namespace, r.o.WebhookSecret, api.Delete(ctx, r.o.WebhookSecret, metav1.DeleteOptions{}))
}

func (r *run) deleteLease(ctx context.Context) error {
	api := r.o.Client.CoordinationV1().Leases(r.o.Namespace)
	return r.deleted("lease", r.o.Namespace, r.o.Lease, api.Delete(ctx, r.o.Lease, metav1.DeleteOptions{}))
}

// deleted records a successful delete; NotFound counts as done.
func (r *run) deleted(kind, ns, name string, err error) error {
	ref := name
	if ns != "" {
		ref = ns + "/" + name
	}
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("delete %s %s: %w", kind, ref, err)
	}
	r.report.Deleted = append(r.report.Deleted, kind+" "+ref)
	r.log.Info("deleted", "kind", kind, "name", ref)
	return nil
}

func (r *run) ref(name string) string { return r.o.Namespace + "/" + name }

// preconditions deletes exactly the object with uid, never a successor
// created meanwhile; dependents (an edge Deployment's ReplicaSets and
// pods) go in the background.
func preconditions(uid types.UID) metav1.DeleteOptions {
	bg := metav1.DeletePropagationBackground
	return metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}, PropagationPolicy: &bg}
}
