// Package configmapstate keeps the control plane's runtime state document
// (the JSON of package configfile: upstreams, Clash mode and node) in one
// key of a ConfigMap in the release namespace, shared by every replica,
// and the upstreams' credentials from it in a Secret next to it (see
// credentials.go): the ConfigMap holds no secret. StateStore is a
// configfile.StateWatcher: Write updates the Secret, then the ConfigMap,
// with optimistic concurrency, and Watch notices what the other replicas
// wrote to either. A ConfigMap written before the Secret existed still
// has credentials inline: they are read from there, and the first Write
// moves them into the Secret.
//
// Concurrency: a write replaces the whole document. The admin API
// serialises changes within a replica; between replicas the last writer
// wins: on a Conflict, Write re-reads the ConfigMap and writes its
// document again over the other replica's, whose change is lost unless it
// is repeated. The replica whose change was lost hears of the winner's
// through Watch, so all replicas converge on the ConfigMap's content.
package configmapstate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

// Defaults of Options.
const (
	DefaultName        = "selfhost-controlplane-state"
	DefaultKey         = "state.json"
	DefaultSecretName  = "selfhost-controlplane-credentials"
	DefaultSecretKey   = "credentials.json"
	DefaultMaxAttempts = 5
	DefaultResync      = 5 * time.Minute
)

// Labels of the ConfigMap and Secret that Write creates.
const (
	ComponentValue       = "controlplane-state"
	SecretComponentValue = "controlplane-credentials"
)

// ErrConflict means Write lost the race against other writers
// MaxAttempts times in a row.
var ErrConflict = errors.New("the state ConfigMap or credentials Secret kept changing under the write")

// Options configure a StateStore.
type Options struct {
	// Namespace is the release namespace; required.
	Namespace string
	// Name of the ConfigMap; empty means DefaultName.
	Name string
	// Key of the document in the ConfigMap's data; empty means DefaultKey.
	Key string
	// SecretName is the Secret holding the upstreams' credentials; empty
	// means DefaultSecretName. Its key is DefaultSecretKey.
	SecretName string
	// MaxAttempts bounds Write's tries when other writers keep winning; 0
	// means DefaultMaxAttempts.
	MaxAttempts int
	// Resync is how often Watch re-checks the cached ConfigMap against
	// what it knows, so a change it failed to confirm (apiserver
	// unreachable at the time) is picked up later; 0 means DefaultResync.
	Resync time.Duration
	// Log; nil discards.
	Log *slog.Logger
}

// StateStore is the state document in a ConfigMap. It is safe for concurrent
// use.
type StateStore struct {
	client kubernetes.Interface
	opts   Options
	log    *slog.Logger

	mu sync.Mutex // serialises Read, Write and Watch's checks
	// cm is the ConfigMap as last read or written (nil: unknown, or it
	// does not exist); Write updates from its resourceVersion.
	cm *corev1.ConfigMap
	// sec is the credentials Secret likewise.
	sec *corev1.Secret
	// data is the newest document known, credentials included; has tells
	// there is one.
	data string
	has  bool
}

// New returns a StateStore for the ConfigMap in opts. It does not call the
// apiserver.
func New(client kubernetes.Interface, opts Options) (*StateStore, error) {
	if opts.Namespace == "" {
		return nil, errors.New("configmap state: Namespace is required")
	}
	if opts.Name == "" {
		opts.Name = DefaultName
	}
	if opts.Key == "" {
		opts.Key = DefaultKey
	}
	if opts.SecretName == "" {
		opts.SecretName = DefaultSecretName
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if opts.Resync <= 0 {
		opts.Resync = DefaultResync
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("configmap", opts.Namespace+"/"+opts.Name, "key", opts.Key, "secret", opts.Namespace+"/"+opts.SecretName)
	return &StateStore{client: client, opts: opts, log: log}, nil
}

// String names the ConfigMap and key, for errors and logs.
func (s *StateStore) String() string {
	return fmt.Sprintf("ConfigMap %s/%s, key %s", s.opts.Namespace, s.opts.Name, s.opts.Key)
}

// Read returns the document. A missing ConfigMap, or one without the key
// (a chart may create it empty), matches fs.ErrNotExist.
func (s *StateStore) Read(ctx context.Context) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cm, err := s.get(ctx)
	switch {
	case apierrors.IsNotFound(err):
		s.cm, s.data, s.has = nil, "", false
		return nil, fmt.Errorf("%s: %w", s, fs.ErrNotExist)
	case err != nil:
		return nil, err
	}
	sec, err := s.getSecret(ctx)
	if err != nil {
		return nil, err
	}
	s.remember(cm, sec)
	if !s.has {
		return nil, fmt.Errorf("%s: %w", s, fs.ErrNotExist)
	}
	if inlineCredentials([]byte(cm.Data[s.opts.Key])) {
		s.log.Info("the state ConfigMap still holds upstream credentials; the next change through the admin API moves them into the Secret")
	}
	return []byte(s.data), nil
}

// Latest returns the newest document known without asking the apiserver;
// fs.ErrNotExist when there is none.
func (s *StateStore) Latest() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.has {
		return nil, fmt.Errorf("%s: %w", s, fs.ErrNotExist)
	}
	return []byte(s.data), nil
}

// Write replaces the document: an Update from the resourceVersion last
// seen, re-reading the ConfigMap after a Conflict (last writer wins, see
// the package comment), or a Create when there is no ConfigMap. Other
// keys, labels and annotations of the ConfigMap are kept.
func (s *StateStore) Write(ctx context.Context, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	doc, creds, err := split(data)
	if err != nil {
		return err
	}
	// The Secret first: a replica reading between the two writes finds
	// the new credentials, applied only to upstreams of the same URL.
	sec, err := s.writeSecret(ctx, creds)
	if err != nil {
		return err
	}
	migrated := s.cm != nil && inlineCredentials([]byte(s.cm.Data[s.opts.Key]))
	if err := s.writeConfigMap(ctx, string(doc), sec); err != nil {
		return err
	}
	if migrated {
		s.log.Info("upstream credentials moved from the state ConfigMap into the Secret")
	}
	return nil
}

// writeConfigMap is Write's ConfigMap half; sec is the Secret as written.
// Called with s.mu held.
func (s *StateStore) writeConfigMap(ctx context.Context, data string, sec *corev1.Secret) error {
	var lastErr error
	for attempt := 1; attempt <= s.opts.MaxAttempts; attempt++ {
		if s.cm == nil {
			cm, err := s.get(ctx)
			switch {
			case apierrors.IsNotFound(err):
				created, err := s.create(ctx, data)
				if apierrors.IsAlreadyExists(err) {
					lastErr = err // another replica created it first
					continue
				}
				if err != nil {
					return err
				}
				s.remember(created, sec)
				return nil
			case err != nil:
				return err
			}
			s.cm = cm
		}
		next := s.cm.DeepCopy()
		if next.Data == nil {
			next.Data = map[string]string{}
		}
		next.Data[s.opts.Key] = data
		updated, err := s.client.CoreV1().ConfigMaps(s.opts.Namespace).Update(ctx, next, metav1.UpdateOptions{})
		switch {
		case err == nil:
			s.remember(updated, sec)
			return nil
		case apierrors.IsConflict(err), apierrors.IsNotFound(err):
			// Changed or deleted since it was read: read it again.
			s.log.Info("state ConfigMap changed by another writer during a write; retrying over it", "attempt", attempt, "err", err)
			s.cm, lastErr = nil, err
		default:
			return fmt.Errorf("update: %w", err)
		}
	}
	return fmt.Errorf("%w (%d attempts): %w", ErrConflict, s.opts.MaxAttempts, lastErr)
}

func (s *StateStore) get(ctx context.Context) (*corev1.ConfigMap, error) {
	cm, err := s.client.CoreV1().ConfigMaps(s.opts.Namespace).Get(ctx, s.opts.Name, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("get: %w", err)
	}
	return cm, err
}

func (s *StateStore) create(ctx context.Context, data string) (*corev1.ConfigMap, error) {
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name:      s.opts.Name,
			Namespace: s.opts.Namespace,
			Labels: map[string]string{
				kubecontract.ManagedByLabel: kubecontract.ManagedByValue,
				kubecontract.ComponentLabel: ComponentValue,
			},
		},
		Data: map[string]string{s.opts.Key: data},
	}
	created, err := s.client.CoreV1().ConfigMaps(s.opts.Namespace).Create(ctx, cm, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create: %w", err)
	}
	s.log.Info("state ConfigMap created")
	return created, nil
}

// remember makes cm and sec (nil: no Secret) the objects last seen and
// their combined document the newest known; it tells whether the document
// changed. Called with s.mu held.
func (s *StateStore) remember(cm *corev1.ConfigMap, sec *corev1.Secret) bool {
	data, has := s.document(cm, sec)
	changed := has != s.has || data != s.data
	s.cm, s.sec, s.data, s.has = cm, sec, data, has
	return changed
}

// document is the state document of cm with sec's credentials put back.
func (s *StateStore) document(cm *corev1.ConfigMap, sec *corev1.Secret) (string, bool) {
	doc, has := cm.Data[s.opts.Key]
	if !has {
		return "", false
	}
	return string(combine([]byte(doc), s.credentials(sec))), true
}
