package configfile

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/configstore"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/snapshot"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// memState is a StateWatcher in memory; external plays another replica.
type memState struct {
	mu      sync.Mutex
	data    []byte // nil: no document
	changed func(ctx context.Context)
	writes  int
	watched chan struct{}
}

func newMemState(data string) *memState {
	m := &memState{watched: make(chan struct{})}
	if data != "" {
		m.data = []byte(data)
	}
	return m
}

func (m *memState) String() string { return "memory" }

func (m *memState) Read(context.Context) ([]byte, error) { return m.Latest() }

func (m *memState) Latest() ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.data == nil {
		return nil, fs.ErrNotExist
	}
	return m.data, nil
}

func (m *memState) Write(_ context.Context, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.data = data
	m.writes++
	return nil
}

func (m *memState) Watch(ctx context.Context, changed func(context.Context)) error {
	m.mu.Lock()
	m.changed = changed
	m.mu.Unlock()
	close(m.watched)
	<-ctx.Done()
	return nil
}

// external stores data as another writer would, without telling anyone
// yet; notify does.
func (m *memState) external(data string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.data = []byte(data)
}

func (m *memState) notify(ctx context.Context) {
	m.mu.Lock()
	changed := m.changed
	m.mu.Unlock()
	changed(ctx)
}

const inClusterConfig = `
upstreams:
  - {prefix: test, url: "http://127.0.0.1:5001"}
clash: {enabled: true, subscriptionUrl: "https://sub.example/x"}
`

func TestInClusterRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, config, err string
	}{
		{"no admin tokens", inClusterConfig, ""},
		{"admin tokens still checked", "adminTokens: [short]\n", "adminTokens[0]: a token needs at least 16"},
		{"empty namespaces", "namespaces: {}\n", ""},
		{"namespaces refused", "namespaces:\n  team-a: {edgeToken: " + edgeTokA + "}\n", "namespaces: not allowed in-cluster: a namespace opts in with the label k8s-selfhost-repo.io/cache=enabled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st, err := New(writeConfig(t, tc.config), "", discard(), InCluster(), WithStateStore(newMemState(""))).Load(t.Context())
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if len(st.Namespaces) != 0 || len(st.AdminTokens) != 0 {
					t.Fatalf("namespaces %v, admin tokens %d", st.Namespaces, len(st.AdminTokens))
				}
				return
			}
			if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
			if strings.Contains(err.Error(), edgeTokA) {
				t.Fatalf("error leaks the token: %v", err)
			}
		})
	}
	// Standalone keeps requiring an admin token.
	if _, err := New(writeConfig(t, inClusterConfig), "", discard()).Load(t.Context()); err == nil || !strings.Contains(err.Error(), "adminTokens: at least one") {
		t.Fatalf("standalone without admin tokens: %v", err)
	}
}

func TestStateStoreRoundTrip(t *testing.T) {
	t.Parallel()
	mem := newMemState("")
	src := New(writeConfig(t, inClusterConfig), "", discard(), InCluster(), WithStateStore(mem))
	if src.StatePath() != "" {
		t.Errorf("StatePath %q with a StateStore", src.StatePath())
	}
	st, err := src.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	st.Upstreams = append(st.Upstreams, &selfhostv1.Upstream{Prefix: "quay", Url: "https://quay.io", Credentials: &selfhostv1.Credentials{Username: "u", Password: secret}})
	st.Clash.Mode, st.Clash.Pinned, st.Clash.ModeFromRuntime = selfhostv1.ProxyMode_PROXY_MODE_PINNED, "HK 01", true
	if err := src.Save(t.Context(), st); err != nil {
		t.Fatal(err)
	}
	again, err := src.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Upstreams) != 2 || again.Upstreams[1].GetCredentials().GetPassword() != secret || again.Clash.Pinned != "HK 01" || !again.Clash.ModeFromRuntime {
		t.Fatalf("after reload: %v, %+v", again.Upstreams, again.Clash)
	}

	mem.external(`{"format":1,"upstreams":[{"prefix":"x","url":"ftp://x"}]}`)
	if _, err := src.Load(t.Context()); err == nil || !strings.Contains(err.Error(), "state memory: upstreams[0].url") {
		t.Fatalf("bad document: %v, want an error naming the store and the field", err)
	}
}

func TestWatchNeedsAWatcher(t *testing.T) {
	t.Parallel()
	err := New(writeConfig(t, validConfig), "", discard()).Watch(t.Context(), func(context.Context, func(*config.State) bool) {})
	if !errors.Is(err, ErrCannotWatch) {
		t.Fatalf("err = %v, want ErrCannotWatch", err)
	}
}

// watchEnv is a Store over a Source over a memState, with Watch running
// and reloads applied through UpdateRuntime as the server wires it.
type watchEnv struct {
	mem     *memState
	src     *Source
	store   *configstore.Store
	reloads chan error
}

func newWatchEnv(t *testing.T) *watchEnv {
	t.Helper()
	e := &watchEnv{mem: newMemState(""), reloads: make(chan error, 10)}
	e.src = New(writeConfig(t, inClusterConfig), "", discard(), InCluster(), WithStateStore(e.mem))
	st, err := e.src.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if e.store, err = configstore.New(st, e.src, snapshot.Builder{}, discard()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- e.src.Watch(ctx, func(ctx context.Context, apply func(*config.State) bool) {
			_, err := e.store.UpdateRuntime(ctx, "runtime state from another replica", apply)
			e.reloads <- err
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	<-e.mem.watched
	return e
}

func (e *watchEnv) prefixes() []string {
	var out []string
	for _, u := range e.store.Current().Upstreams {
		out = append(out, u.GetPrefix())
	}
	return out
}

func (e *watchEnv) addUpstream(t *testing.T, prefix string) {
	t.Helper()
	if _, err := e.store.Update(t.Context(), "add", func(st *config.State) error {
		st.Upstreams = append(st.Upstreams, &selfhostv1.Upstream{Prefix: prefix, Url: "https://" + prefix + ".io"})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestWatchAppliesOtherWriters(t *testing.T) {
	t.Parallel()
	e := newWatchEnv(t)
	e.mem.external(`{"format":1,"upstreams":[{"prefix":"ghcr","url":"https://ghcr.io"}],"clash":{"mode":"direct"}}`)
	e.mem.notify(t.Context())
	if err := <-e.reloads; err != nil {
		t.Fatal(err)
	}
	if got := e.prefixes(); len(got) != 1 || got[0] != "ghcr" {
		t.Fatalf("upstreams after the reload: %v", got)
	}
	if p := e.store.Current().Proxy; p == nil || p.Mode != selfhostv1.ProxyMode_PROXY_MODE_DIRECT {
		t.Fatalf("proxy after the reload: %+v, want direct mode", p)
	}
	e.mem.mu.Lock()
	writes := e.mem.writes
	e.mem.mu.Unlock()
	if writes != 0 {
		t.Fatalf("a reload was persisted again (%d writes)", writes)
	}
}

func TestWatchKeepsANewerLocalSave(t *testing.T) {
	t.Parallel()
	e := newWatchEnv(t)
	// Another replica writes X; before its change is applied here, a local
	// admin call saves Y over it (last writer wins). The late reload must
	// apply Y — what the store holds — not X.
	e.mem.external(`{"format":1,"upstreams":[{"prefix":"ghcr","url":"https://ghcr.io"}]}`)
	e.addUpstream(t, "quay")
	e.mem.notify(t.Context())
	if err := <-e.reloads; err != nil {
		t.Fatal(err)
	}
	if got := e.prefixes(); !slices.Equal(got, []string{"quay", "test"}) {
		t.Fatalf("upstreams %v, want the local save's [quay test]", got)
	}
}

func TestWatchSkipsBadDocuments(t *testing.T) {
	t.Parallel()
	for name, doc := range map[string]string{
		"not json":      "{",
		"bad upstream":  `{"format":1,"upstreams":[{"prefix":"x","url":"ftp://x"}]}`,
		"bad mode":      `{"format":1,"upstreams":[],"clash":{"mode":"fastest"}}`,
		"future format": `{"format":2,"upstreams":[]}`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newWatchEnv(t)
			e.mem.external(doc)
			e.mem.notify(t.Context())
			if err := <-e.reloads; err != nil {
				t.Fatal(err)
			}
			if got := e.prefixes(); len(got) != 1 || got[0] != "test" {
				t.Fatalf("upstreams %v after a bad document, want [test]", got)
			}
		})
	}
}
