package controller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/utils/ptr"
)

// The CA ConfigMap: the CA bundle the edge verifies the control plane's
// gRPC certificate with, in every opted-in namespace, mounted into the
// edge at CADir and passed as --control-plane-ca-file=CAPath.
const (
	CAConfigMapName = "selfhost-controlplane-ca"
	CAConfigMapKey  = "ca.crt"
	CADir           = "/var/run/k8s-selfhost-repo/control-plane-ca"
	CAPath          = CADir + "/" + CAConfigMapKey

	volCA = "control-plane-ca"
)

// errNoCABundle: the CA is not loaded yet (the keeper's first sync); the
// namespace is retried, and its edge waits for the ConfigMap it mounts.
var errNoCABundle = errors.New("the control plane's CA bundle is not loaded yet")

// CABundle holds the PEM CA bundle the edges trust (the CA, and the
// previous one during a rotation's overlap). The TLS keeper sets it; a
// controller given it with WithCABundle writes it into every opted-in
// namespace's CA ConfigMap and rewrites them all when it changes. It is
// safe for concurrent use.
type CABundle struct {
	mu       sync.Mutex
	pem      []byte
	onChange []func()
}

// Set stores pem and, when it differs from the stored bundle, tells the
// controllers using it. It does not block.
func (b *CABundle) Set(pem []byte) {
	b.mu.Lock()
	if bytes.Equal(b.pem, pem) {
		b.mu.Unlock()
		return
	}
	b.pem = bytes.Clone(pem)
	fns := b.onChange
	b.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// Get returns the stored bundle (nil before the first Set).
func (b *CABundle) Get() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pem
}

func (b *CABundle) subscribe(fn func()) {
	b.mu.Lock()
	b.onChange = append(b.onChange, fn)
	b.mu.Unlock()
}

// WithCABundle makes the controller keep a CA ConfigMap holding b in every
// opted-in namespace. The edge template must then set ControlPlaneCA, so
// that the edges mount it.
func WithCABundle(b *CABundle) Option { return func(c *Controller) { c.ca = b } }

// registerCAConfigMaps watches the CA ConfigMaps (drift repair) and
// requeues every namespace when the bundle changes. Without
// WithCABundle it does nothing.
func (c *Controller) registerCAConfigMaps(managed informers.SharedInformerFactory) error {
	if c.ca == nil {
		return nil
	}
	inf := managed.Core().V1().ConfigMaps()
	c.configMaps = inf.Lister()
	reg, err := inf.Informer().AddEventHandler(c.objectHandler(CAConfigMapName, false))
	if err != nil {
		return fmt.Errorf("namespace controller: add event handler: %w", err)
	}
	c.synced = append(c.synced, reg.HasSynced)
	c.ca.subscribe(func() {
		c.mu.Lock()
		q := c.queue
		c.mu.Unlock()
		if q != nil {
			c.log.Info("control plane CA bundle changed; updating the edges' CA ConfigMaps")
			c.enqueueAll(q)
		}
	})
	return nil
}

// desiredCAConfigMap is the CA ConfigMap holding bundle.
func (t EdgeTemplate) desiredCAConfigMap(ns string, bundle []byte) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: t.meta(ns, CAConfigMapName),
		Data:       map[string]string{CAConfigMapKey: string(bundle)},
	}
}

// caVolume mounts the CA ConfigMap (read-only, world-readable: a CA
// certificate is public).
func caVolume() (corev1.Volume, corev1.VolumeMount) {
	return corev1.Volume{Name: volCA, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: CAConfigMapName},
			Items:                []corev1.KeyToPath{{Key: CAConfigMapKey, Path: CAConfigMapKey}},
			DefaultMode:          ptr.To[int32](0o444),
		}}},
		corev1.VolumeMount{Name: volCA, MountPath: CADir, ReadOnly: true}
}

// ensureCAConfigMap creates or repairs ns's CA ConfigMap; without
// WithCABundle it does nothing.
func (c *Controller) ensureCAConfigMap(ctx context.Context, ns string) error {
	if c.ca == nil {
		return nil
	}
	bundle := c.ca.Get()
	if len(bundle) == 0 {
		return errNoCABundle
	}
	want := c.tmpl.desiredCAConfigMap(ns, bundle)
	api := c.client.CoreV1().ConfigMaps(ns)
	cur, created, err := current(ctx, "configmap", ns, want.Name, want,
		c.configMaps.ConfigMaps(ns).Get,
		func(ctx context.Context, o *corev1.ConfigMap) (*corev1.ConfigMap, error) {
			return api.Create(ctx, o, metav1.CreateOptions{})
		}, api.Get)
	if err != nil || created {
		c.logCreated(err, created, ns, "configmap", want.Name)
		return err
	}
	drift := labelsDrift(cur.Labels, want.Labels)
	if drift == "" && cur.Data[CAConfigMapKey] != want.Data[CAConfigMapKey] {
		drift = "data[" + CAConfigMapKey + "]"
	}
	if drift == "" {
		return nil
	}
	upd := cur.DeepCopy()
	upd.Labels = mergeLabels(upd.Labels, want.Labels)
	if upd.Data == nil {
		upd.Data = map[string]string{}
	}
	upd.Data[CAConfigMapKey] = want.Data[CAConfigMapKey]
	if _, err := api.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update configmap %s/%s: %w", ns, want.Name, err)
	}
	c.logRepaired(ns, "configmap", want.Name, drift)
	return nil
}

// deleteCAConfigMap deletes ns's CA ConfigMap if the controller made it.
func (c *Controller) deleteCAConfigMap(ctx context.Context, ns, reason string) error {
	if c.configMaps == nil {
		return nil
	}
	o, err := c.configMaps.ConfigMaps(ns).Get(CAConfigMapName)
	if err != nil {
		return nil // none cached: nothing of ours
	}
	err = c.client.CoreV1().ConfigMaps(ns).Delete(ctx, o.Name, deleteOptions(o.UID))
	switch {
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
		return nil
	case err != nil:
		return fmt.Errorf("delete configmap %s/%s: %w", ns, o.Name, err)
	}
	c.log.Info("deleted edge object", "namespace", ns, "kind", "configmap", "name", o.Name, "reason", reason)
	return nil
}

// WithReconcileObserver calls fn after every namespace sync with its
// error and duration (metrics).
func WithReconcileObserver(fn func(err error, d time.Duration)) Option {
	return func(c *Controller) { c.reconciled = fn }
}
