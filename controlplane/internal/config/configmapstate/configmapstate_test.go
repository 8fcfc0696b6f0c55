package configmapstate

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config/configfile"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

const ns = "selfhost-system"

var _ configfile.StateWatcher = (*StateStore)(nil)

var configMaps = schema.GroupResource{Resource: "configmaps"}

func newStore(t *testing.T, client kubernetes.Interface) *StateStore {
	t.Helper()
	s, err := New(client, Options{Namespace: ns, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func stateCM(data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: DefaultName, Namespace: ns, Labels: map[string]string{"chart": "x"}},
		Data:       data,
	}
}

func getCM(t *testing.T, client kubernetes.Interface) *corev1.ConfigMap {
	t.Helper()
	cm, err := client.CoreV1().ConfigMaps(ns).Get(t.Context(), DefaultName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cm
}

func TestReadMissing(t *testing.T) {
	t.Parallel()
	tests := map[string]*fake.Clientset{
		"no ConfigMap":       fake.NewClientset(),
		"ConfigMap, no key":  fake.NewClientset(stateCM(map[string]string{"other": "x"})),
		"ConfigMap, no data": fake.NewClientset(stateCM(nil)),
	}
	for name, client := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, client)
			if _, err := s.Read(t.Context()); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("Read: %v, want fs.ErrNotExist", err)
			}
			if _, err := s.Latest(); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("Latest: %v, want fs.ErrNotExist", err)
			}
		})
	}
}

func TestReadError(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset()
	down := apierrors.NewServiceUnavailable("etcd is gone")
	client.PrependReactor("get", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, down })
	if _, err := newStore(t, client).Read(t.Context()); !errors.Is(err, down) || errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Read: %v, want the apiserver's error, not ErrNotExist", err)
	}
}

func TestWriteCreatesThenUpdates(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset()
	s := newStore(t, client)
	if err := s.Write(t.Context(), []byte(`{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	cm := getCM(t, client)
	if cm.Data[DefaultKey] != `{"v":1}` || cm.Labels[kubecontract.ManagedByLabel] != kubecontract.ManagedByValue || cm.Labels[kubecontract.ComponentLabel] != ComponentValue {
		t.Fatalf("created %+v", cm)
	}
	if err := s.Write(t.Context(), []byte(`{"v":2}`)); err != nil {
		t.Fatal(err)
	}
	if got := getCM(t, client).Data[DefaultKey]; got != `{"v":2}` {
		t.Fatalf("after the update: %q", got)
	}
	// Another StateStore (a restarted replica) reads it.
	data, err := newStore(t, client).Read(t.Context())
	if err != nil || string(data) != `{"v":2}` {
		t.Fatalf("Read: %q, %v", data, err)
	}
}

func TestWriteKeepsTheRestOfTheConfigMap(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset(stateCM(map[string]string{"README": "written by the chart"}))
	s := newStore(t, client)
	if _, err := s.Read(t.Context()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	if err := s.Write(t.Context(), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	cm := getCM(t, client)
	if cm.Data["README"] != "written by the chart" || cm.Labels["chart"] != "x" || cm.Data[DefaultKey] != `{}` {
		t.Fatalf("ConfigMap after the write: %+v", cm)
	}
}

func TestWriteRetriesConflicts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		conflicts int32
		err       error
	}{
		{"one conflict", 1, nil},
		{"four conflicts", 4, nil},
		{"always", 1 << 30, ErrConflict},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			client := fake.NewClientset(stateCM(map[string]string{DefaultKey: "old"}))
			var updates, gets atomic.Int32
			client.PrependReactor("update", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
				if updates.Add(1) <= tc.conflicts {
					return true, nil, apierrors.NewConflict(configMaps, DefaultName, errors.New("the object has been modified"))
				}
				return false, nil, nil
			})
			client.PrependReactor("get", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
				gets.Add(1)
				return false, nil, nil
			})
			s := newStore(t, client)
			if _, err := s.Read(t.Context()); err != nil {
				t.Fatal(err)
			}
			err := s.Write(t.Context(), []byte("new"))
			if !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
				t.Fatalf("Write: %v, want %v", err, tc.err)
			}
			if tc.err != nil {
				if !apierrors.IsConflict(err) || updates.Load() != DefaultMaxAttempts {
					t.Fatalf("gave up after %d updates (%v), want %d wrapping the Conflict", updates.Load(), err, DefaultMaxAttempts)
				}
				return
			}
			if got := getCM(t, client).Data[DefaultKey]; got != "new" {
				t.Fatalf("stored %q", got)
			}
			// One Get by Read, one re-read per conflict, one by getCM.
			if updates.Load() != tc.conflicts+1 || gets.Load() != tc.conflicts+2 {
				t.Fatalf("%d updates, %d gets for %d conflicts", updates.Load(), gets.Load(), tc.conflicts)
			}
		})
	}
}

func TestWriteCreateRace(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset()
	// Another replica creates the ConfigMap between this one's Get and
	// Create.
	var once atomic.Bool
	client.PrependReactor("create", "configmaps", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if once.Swap(true) {
			return false, nil, nil
		}
		if err := client.Tracker().Add(stateCM(map[string]string{DefaultKey: "theirs"})); err != nil {
			return true, nil, err
		}
		return true, nil, apierrors.NewAlreadyExists(configMaps, DefaultName)
	})
	s := newStore(t, client)
	if err := s.Write(t.Context(), []byte("ours")); err != nil {
		t.Fatal(err)
	}
	if got := getCM(t, client).Data[DefaultKey]; got != "ours" {
		t.Fatalf("stored %q, want the later write", got)
	}
}

func TestWriteDeletedConfigMap(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset(stateCM(map[string]string{DefaultKey: "v1"}))
	s := newStore(t, client)
	if _, err := s.Read(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := client.CoreV1().ConfigMaps(ns).Delete(t.Context(), DefaultName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(t.Context(), []byte("v2")); err != nil {
		t.Fatal(err)
	}
	if got := getCM(t, client).Data[DefaultKey]; got != "v2" {
		t.Fatalf("stored %q", got)
	}
}

func TestBadDocumentNamesConfigMapAndKey(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset(stateCM(map[string]string{DefaultKey: "{"}))
	cfg := filepath.Join(t.TempDir(), "controlplane.yaml")
	if err := os.WriteFile(cfg, []byte("upstreams: [{prefix: test, url: 'https://test.io'}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := configfile.New(cfg, "", slog.New(slog.DiscardHandler), configfile.InCluster(), configfile.WithStateStore(newStore(t, client)))
	_, err := src.Load(t.Context())
	if err == nil || !strings.Contains(err.Error(), "ConfigMap "+ns+"/"+DefaultName+", key "+DefaultKey) {
		t.Fatalf("Load: %v, want an error naming the ConfigMap and key", err)
	}
}

// watching runs s.Watch until the test ends and reports each call of
// changed with the document Latest returns at that moment.
func watching(t *testing.T, s *StateStore) <-chan string {
	t.Helper()
	calls := make(chan string, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.Watch(ctx, func(context.Context) {
			data, err := s.Latest()
			if err != nil {
				data = []byte(err.Error())
			}
			calls <- string(data)
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return calls
}

// next waits for a call of changed; the deadline only keeps a broken
// watch from hanging the test.
func next(t *testing.T, calls <-chan string) string {
	t.Helper()
	select {
	case c := <-calls:
		return c
	case <-time.After(30 * time.Second):
		t.Fatal("changed was not called")
		return ""
	}
}

func updateExternally(t *testing.T, client kubernetes.Interface, data string) {
	t.Helper()
	cm := getCM(t, client)
	cm.Data[DefaultKey] = data
	if _, err := client.CoreV1().ConfigMaps(ns).Update(t.Context(), cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestWatchSeesOtherWritersOnly(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset(stateCM(map[string]string{DefaultKey: "v1"}))
	s := newStore(t, client)
	if _, err := s.Read(t.Context()); err != nil {
		t.Fatal(err)
	}
	calls := watching(t, s)
	// Its own write first, then someone else's: events arrive in order, so
	// a call for its own write would come first.
	if err := s.Write(t.Context(), []byte("mine")); err != nil {
		t.Fatal(err)
	}
	updateExternally(t, client, "theirs")
	if got := next(t, calls); got != "theirs" {
		t.Fatalf("first change reported: %q, want the other writer's", got)
	}
	// An unrelated ConfigMap in the namespace is not a change.
	other := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "unrelated", Namespace: ns}, Data: map[string]string{DefaultKey: "x"}}
	if _, err := client.CoreV1().ConfigMaps(ns).Create(t.Context(), other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	updateExternally(t, client, "theirs again")
	if got := next(t, calls); got != "theirs again" {
		t.Fatalf("second change reported: %q", got)
	}
}

func TestWatchTwoReplicas(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset()
	a, b := newStore(t, client), newStore(t, client)
	for _, s := range []*StateStore{a, b} {
		if _, err := s.Read(t.Context()); !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}
	callsA, callsB := watching(t, a), watching(t, b)
	if err := a.Write(t.Context(), []byte("from a")); err != nil {
		t.Fatal(err)
	}
	if got := next(t, callsB); got != "from a" {
		t.Fatalf("b saw %q", got)
	}
	if err := b.Write(t.Context(), []byte("from b")); err != nil {
		t.Fatal(err)
	}
	if got := next(t, callsA); got != "from b" {
		t.Fatalf("a saw %q (a call for its own write?)", got)
	}
}

func TestStaleEventIsConfirmed(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset(stateCM(map[string]string{DefaultKey: "v1"}))
	s := newStore(t, client)
	if _, err := s.Read(t.Context()); err != nil {
		t.Fatal(err)
	}
	stale := getCM(t, client) // the ConfigMap as another writer left it …
	stale.Data[DefaultKey] = "older, theirs"
	stale.ResourceVersion = "1"
	if err := s.Write(t.Context(), []byte("newer, mine")); err != nil { // … before this write
		t.Fatal(err)
	}
	called := s.observe(t.Context(), stale)
	if data, _ := s.Latest(); called || string(data) != "newer, mine" {
		t.Fatalf("stale event: called=%v, Latest %q", called, data)
	}
}
