package proof

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/fs"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream"
)

// fakeChecker answers HEADs from a table; a unit-test stand-in for an
// upstream (the broker's tests use a real token-protected registry).
type fakeChecker struct {
	mu     sync.Mutex
	public map[oci.Digest]bool
	priv   map[string]map[oci.Digest]bool // namespace → digests its credentials reach
	down   bool
	asked  int
}

func (f *fakeChecker) Allowed(ns, prefix string) bool { return prefix == "up" }

func (f *fakeChecker) HeadManifest(_ context.Context, ns, _, _ string, d oci.Digest, anonymous bool) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, hasCreds := f.priv[ns]
	if !anonymous && !hasCreds {
		return false, nil // no request is made without credentials
	}
	f.asked++
	if f.down {
		return !anonymous, upstream.ErrUnavailable
	}
	if anonymous {
		if f.public[d] {
			return false, nil
		}
		return false, upstream.ErrUnauthorized
	}
	if m[d] {
		return true, nil
	}
	return true, upstream.ErrUnauthorized
}

func storeManifest(t *testing.T, s blob.Store, v any) oci.Digest {
	t.Helper()
	body, _ := json.Marshal(v)
	d := oci.FromBytes(body)
	w, err := s.Create(context.Background(), blob.ManifestKey(d), blob.Expect{Digest: d, Size: int64(len(body)), ContentType: oci.MediaTypeOCIManifest})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	return d
}

func desc(d oci.Digest) map[string]any { return map[string]any{"digest": d.String(), "size": 1} }

func TestIndexChildrenAndTheirBlobs(t *testing.T) {
	ctx := context.Background()
	store, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	layer, config := oci.FromBytes([]byte("layer")), oci.FromBytes([]byte("config"))
	child := storeManifest(t, store, map[string]any{"config": desc(config), "layers": []any{desc(layer)}})
	index := storeManifest(t, store, map[string]any{"manifests": []any{desc(child)}})
	other := oci.FromBytes([]byte("unrelated"))
	now := time.Now()
	fc := &fakeChecker{public: map[oci.Digest]bool{}, priv: map[string]map[oci.Digest]bool{"a": {index: true}}}
	p := New(fc, store, Options{Now: func() time.Time { return now }})

	tests := []struct {
		name      string
		ns        string
		manifest  bool
		d         oci.Digest
		want      Access
		wantErr   error
		wantAsked int
	}{
		{"b: index, no credentials", "b", true, index, Denied, ErrNoProof, 1},
		{"b: again within the negative TTL, not asked", "b", true, index, Denied, ErrNoProof, 1},
		{"a: index with its credentials", "a", true, index, Namespace, nil, 3},
		{"a: child via the index, not asked", "a", true, child, Namespace, nil, 3},
		{"a: layer of the child", "a", false, layer, Namespace, nil, 3},
		{"a: config of the child", "a", false, config, Namespace, nil, 3},
		{"a: unrelated blob", "a", false, other, Denied, ErrNoProof, 3},
		{"b: the layer a proved", "b", false, layer, Denied, ErrNoProof, 3},
		{"a: other upstream", "a", true, index, Denied, ErrUnknownUpstream, 3},
	}
	for _, tt := range tests {
		prefix := "up"
		if tt.wantErr == ErrUnknownUpstream {
			prefix = "other"
		}
		var got Access
		var err error
		if tt.manifest {
			got, err = p.Manifest(ctx, tt.ns, prefix, "r", tt.d)
		} else {
			got, err = p.Blob(ctx, tt.ns, prefix, "r", tt.d)
		}
		if got != tt.want || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
			t.Errorf("%s: %v, %v; want %v, %v", tt.name, got, err, tt.want, tt.wantErr)
		}
		if fc.asked != tt.wantAsked {
			t.Errorf("%s: upstream asked %d times, want %d", tt.name, fc.asked, tt.wantAsked)
		}
	}

	// Outage: a's own proof, stale, still serves a; nothing unproven does.
	now = now.Add(time.Hour)
	fc.down = true
	if got, err := p.Manifest(ctx, "a", "up", "r", index); got != Namespace || err != nil {
		t.Errorf("outage, a's stale proof: %v %v", got, err)
	}
	if got, err := p.Manifest(ctx, "b", "up", "r", index); got != Denied || !errors.Is(err, ErrUnavailable) {
		t.Errorf("outage, b: %v %v", got, err)
	}

	// A public manifest that turns private is withdrawn for everyone.
	fc.down = false
	fc.public[child] = true
	if got, _ := p.Manifest(ctx, "b", "up", "r2", child); got != Public {
		t.Fatalf("public child: %v", got)
	}
	if got, _ := p.Blob(ctx, "b", "up", "r2", layer); got != Public {
		t.Fatalf("layer of a public manifest: %v", got)
	}
	fc.public[child] = false
	now = now.Add(time.Hour)
	if got, _ := p.Manifest(ctx, "b", "up", "r2", child); got != Denied {
		t.Errorf("withdrawn public manifest: %v", got)
	}
	if got, _ := p.Blob(ctx, "b", "up", "r2", layer); got != Denied {
		t.Errorf("layer of a withdrawn manifest: %v", got)
	}
}
