package configmapstate

import (
	"context"
	"sync"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	corev1informers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Watch runs an informer on the ConfigMap and one on the credentials
// Secret (field selectors by name, which RBAC's resourceNames authorize)
// until ctx ends, and calls changed, never concurrently, each time the
// combined document differs from the newest this StateStore knows — that is,
// after another writer changed it, never for this StateStore's own writes.
//
// An event can be older than this StateStore's last write (it was in flight
// while Write ran), so a different document is confirmed by reading both
// objects before it counts: Latest then returns their current document,
// not the event's. A read that fails is logged and retried at the next
// event or resync.
func (s *StateStore) Watch(ctx context.Context, changed func(ctx context.Context)) error {
	byName := func(name string) func(*metav1.ListOptions) {
		return func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}
	}
	cms := corev1informers.NewFilteredConfigMapInformer(s.client, s.opts.Namespace, s.opts.Resync, cache.Indexers{}, byName(s.opts.Name))
	secs := corev1informers.NewFilteredSecretInformer(s.client, s.opts.Namespace, s.opts.Resync, cache.Indexers{}, byName(s.opts.SecretName))
	var mu sync.Mutex // changed is never called concurrently
	observe := func(obj any) {
		mu.Lock()
		defer mu.Unlock()
		if s.observe(ctx, obj) {
			changed(ctx)
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    observe,
		UpdateFunc: func(_, obj any) { observe(obj) },
		DeleteFunc: func(obj any) {
			if _, ok := obj.(*corev1.ConfigMap); ok {
				s.log.Warn("state ConfigMap deleted; the state in use stays, and the next change through the admin API recreates it")
			}
		},
	}
	for _, inf := range []cache.SharedIndexInformer{cms, secs} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
	}
	var g errgroup.Group
	g.Go(func() error { cms.RunWithContext(ctx); return nil })
	g.Go(func() error { secs.RunWithContext(ctx); return nil })
	return g.Wait()
}

// observe handles one event about the ConfigMap or the Secret and tells
// whether the document changed.
func (s *StateStore) observe(ctx context.Context, obj any) bool {
	switch o := obj.(type) {
	case *corev1.ConfigMap:
		if o.Name != s.opts.Name || o.Namespace != s.opts.Namespace || !s.confirm(ctx, o, nil) {
			return false
		}
		s.log.Info("state ConfigMap changed by another writer")
	case *corev1.Secret:
		if o.Name != s.opts.SecretName || o.Namespace != s.opts.Namespace || !s.confirm(ctx, nil, o) {
			return false
		}
		s.log.Info("credentials Secret changed by another writer")
	default:
		return false
	}
	return true
}

// confirm tells whether the event's object (cm or sec; the other is nil)
// makes the document news; if so, the objects' current document is the
// newest known once confirm returns.
func (s *StateStore) confirm(ctx context.Context, cm *corev1.ConfigMap, sec *corev1.Secret) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case cm != nil:
		if s.cm != nil && cm.ResourceVersion != "" && cm.ResourceVersion == s.cm.ResourceVersion {
			return false // this StateStore's own read or write
		}
		if data, has := s.document(cm, s.sec); has == s.has && data == s.data {
			return false // same document, whoever wrote it
		}
	case sec != nil:
		if s.sec != nil && sec.ResourceVersion != "" && sec.ResourceVersion == s.sec.ResourceVersion {
			return false
		}
		if s.cm == nil {
			return false // no document: the ConfigMap's event follows
		}
		if data, has := s.document(s.cm, sec); has == s.has && data == s.data {
			return false
		}
	}
	freshCM, err := s.get(ctx)
	if err != nil {
		// Deleted since (the Delete event follows) or the apiserver is
		// unreachable: the resync tries again.
		s.log.Warn("state changed, but cannot be read now", "err", err)
		return false
	}
	freshSec, err := s.getSecret(ctx)
	if err != nil {
		s.log.Warn("state changed, but its credentials cannot be read now", "err", err)
		return false
	}
	return s.remember(freshCM, freshSec)
}
