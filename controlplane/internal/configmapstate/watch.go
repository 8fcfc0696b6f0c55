package configmapstate

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	corev1informers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Watch runs an informer on the one ConfigMap (field selector by name)
// until ctx ends, and calls changed, never concurrently, each time its
// document differs from the newest this Store knows — that is, after
// another writer changed it, never for this Store's own writes.
//
// An event can be older than this Store's last write (it was in flight
// while Write ran), so a different document is confirmed with a Get
// before it counts: Latest then returns the ConfigMap's current document,
// not the event's. A Get that fails is logged and retried at the next
// event or resync.
func (s *Store) Watch(ctx context.Context, changed func(ctx context.Context)) error {
	inf := corev1informers.NewFilteredConfigMapInformer(s.client, s.opts.Namespace, s.opts.Resync, cache.Indexers{},
		func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", s.opts.Name).String()
		})
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.observe(ctx, obj, changed) },
		UpdateFunc: func(_, obj any) { s.observe(ctx, obj, changed) },
		DeleteFunc: func(any) {
			s.log.Warn("state ConfigMap deleted; the state in use stays, and the next change through the admin API recreates it")
		},
	})
	if err != nil {
		return err
	}
	inf.RunWithContext(ctx)
	return nil
}

// observe handles one event about the ConfigMap.
func (s *Store) observe(ctx context.Context, obj any, changed func(context.Context)) {
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok || cm.Name != s.opts.Name || cm.Namespace != s.opts.Namespace {
		return
	}
	if !s.confirm(ctx, cm) {
		return
	}
	s.log.Info("state ConfigMap changed by another writer")
	changed(ctx)
}

// confirm tells whether cm's document is news; if so it is the newest
// known once confirm returns.
func (s *Store) confirm(ctx context.Context, cm *corev1.ConfigMap) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, has := cm.Data[s.opts.Key]
	if s.cm != nil && cm.ResourceVersion != "" && cm.ResourceVersion == s.cm.ResourceVersion {
		return false // this Store's own read or write
	}
	if has == s.has && data == s.data {
		return false // same document, whoever wrote it
	}
	fresh, err := s.get(ctx)
	if err != nil {
		// Deleted since (the Delete event follows) or the apiserver is
		// unreachable: the resync tries again.
		s.log.Warn("state ConfigMap changed, but cannot be read now", "err", err)
		return false
	}
	return s.remember(fresh)
}
