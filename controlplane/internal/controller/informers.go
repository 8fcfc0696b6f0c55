package controller

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

// Informers are the informer factories a Controller reads from. Every one
// but Namespaces lists and watches the objects of one name only (field
// selector metadata.name=<name>) in every namespace: the apiserver
// authorizes such a list or watch by RBAC resourceNames, so the control
// plane's role names the objects it may read (deploy/rbac.yaml) instead of
// granting every Secret, ConfigMap or Deployment of the cluster.
type Informers struct {
	// Namespaces: all of them (opt-in label, terminating).
	Namespaces informers.SharedInformerFactory
	// Edge: the ServiceAccount, Service, Deployment and
	// PodDisruptionBudget named kubecontract.EdgeName that the controller
	// owns (ManagedSelector).
	Edge informers.SharedInformerFactory
	// PullSecrets: the Secrets named kubecontract.PullSecretName that the
	// controller owns.
	PullSecrets informers.SharedInformerFactory
	// CAConfigMaps: the ConfigMaps named CAConfigMapName that the
	// controller owns (used only WithCABundle).
	CAConfigMaps informers.SharedInformerFactory
	// UpstreamCredentials: the tenants' own Secrets named
	// kubecontract.UpstreamCredentialsSecretName, whatever their labels
	// (the tenants make them).
	UpstreamCredentials informers.SharedInformerFactory
}

// NewInformers returns the factories New reads from. The caller starts
// them after New, on every replica.
func NewInformers(client kubernetes.Interface, resync time.Duration) *Informers {
	named := func(name string, managed bool) informers.SharedInformerFactory {
		return informers.NewSharedInformerFactoryWithOptions(client, resync,
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
				if managed {
					o.LabelSelector = ManagedSelector().String()
				}
			}))
	}
	return &Informers{
		Namespaces:          informers.NewSharedInformerFactory(client, resync),
		Edge:                named(kubecontract.EdgeName, true),
		PullSecrets:         named(kubecontract.PullSecretName, true),
		CAConfigMaps:        named(CAConfigMapName, true),
		UpstreamCredentials: named(kubecontract.UpstreamCredentialsSecretName, false),
	}
}

func (f *Informers) all() []informers.SharedInformerFactory {
	return []informers.SharedInformerFactory{f.Namespaces, f.Edge, f.PullSecrets, f.CAConfigMaps, f.UpstreamCredentials}
}

// Start starts every factory's registered informers.
func (f *Informers) Start(stop <-chan struct{}) {
	for _, x := range f.all() {
		x.Start(stop)
	}
}

// WaitForCacheSync waits until every started informer has synced; false
// when stop closed first.
func (f *Informers) WaitForCacheSync(stop <-chan struct{}) bool {
	for _, x := range f.all() {
		for _, ok := range x.WaitForCacheSync(stop) {
			if !ok {
				return false
			}
		}
	}
	return true
}

// Shutdown stops every factory's informers and waits for them.
func (f *Informers) Shutdown() {
	for _, x := range f.all() {
		x.Shutdown()
	}
}
