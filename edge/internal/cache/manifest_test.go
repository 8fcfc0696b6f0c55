package cache

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/route"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream"
)

func manifestBody(s string) []byte {
	return []byte(`{"schemaVersion":2,"mediaType":"` + oci.MediaTypeOCIManifest + `","annotations":{"v":"` + s + `"}}`)
}

func TestTagFreshnessAndRevalidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	d1 := e.up.setTag("v1", manifestBody("one"))

	m, err := e.c.Manifest(ctx, e.ups, tagRoute("v1"))
	if err != nil || m.Digest != d1 || m.Source != "upstream" {
		t.Fatalf("cold: %+v, %v", m, err)
	}
	// Fresh: no upstream traffic at all.
	m, err = e.c.Manifest(ctx, e.ups, tagRoute("v1"))
	if err != nil || m.Source != "cache" || e.up.manifestGets.Load() != 1 || e.up.manifestHeads.Load() != 0 {
		t.Fatalf("fresh hit went upstream: gets=%d heads=%d err=%v", e.up.manifestGets.Load(), e.up.manifestHeads.Load(), err)
	}
	// Stale, unchanged upstream: one HEAD, no GET.
	e.clock.add(2 * time.Minute)
	m, err = e.c.Manifest(ctx, e.ups, tagRoute("v1"))
	if err != nil || m.Digest != d1 || e.up.manifestHeads.Load() != 1 || e.up.manifestGets.Load() != 1 {
		t.Fatalf("revalidate unchanged: heads=%d gets=%d err=%v", e.up.manifestHeads.Load(), e.up.manifestGets.Load(), err)
	}
	// Stale, moved upstream: HEAD then GET of the new manifest.
	d2 := e.up.setTag("v1", manifestBody("two"))
	e.clock.add(2 * time.Minute)
	m, err = e.c.Manifest(ctx, e.ups, tagRoute("v1"))
	if err != nil || m.Digest != d2 {
		t.Fatalf("moved tag: got %v, want %v (err %v)", m.Digest, d2, err)
	}
	// Stale with the upstream down: the last mapping is served and counted.
	e.up.down.Store(true)
	e.clock.add(2 * time.Minute)
	m, err = e.c.Manifest(ctx, e.ups, tagRoute("v1"))
	if err != nil || m.Digest != d2 || !m.Stale {
		t.Fatalf("stale serve: %+v, %v", m, err)
	}
	if n := testutil.ToFloat64(e.m.StaleServes); n != 1 {
		t.Fatalf("stale serves = %v, want 1", n)
	}
	// By digest needs no upstream at all.
	if m, err := e.c.Manifest(ctx, e.ups, digestRoute(d1)); err != nil || m.Digest != d1 {
		t.Fatalf("by digest with upstream down: %v", err)
	}
}

func TestTagsArePerNamespace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.up.setTag("latest", manifestBody("a"))
	if _, err := e.c.Manifest(ctx, e.ups, tagRoute("latest")); err != nil {
		t.Fatal(err)
	}
	key, _ := blob.TagKey("team-a", "test", "app", "latest")
	if _, err := e.mem.Stat(ctx, key); err != nil {
		t.Fatalf("tag record not under team-a: %v", err)
	}
	other, _ := blob.TagKey("team-b", "test", "app", "latest")
	if _, err := e.mem.Stat(ctx, other); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("tag record leaked to team-b: %v", err)
	}
}

func TestManifestErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		setup   func(e *env)
		wantErr error
	}{
		{"unknown tag", func(e *env) {}, upstream.ErrNotFound},
		{"upstream down, never cached", func(e *env) { e.up.down.Store(true) }, upstream.ErrUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			tc.setup(e)
			_, err := e.c.Manifest(context.Background(), e.ups, tagRoute("nope"))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if keys := e.mem.Keys(); len(keys) != 0 {
				t.Fatalf("store holds %v after a failed fetch", keys)
			}
		})
	}
}

func TestDigestMismatchNotStored(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	want := oci.FromBytes([]byte("what was asked for"))
	e.up.manifests[want.String()] = manifestBody("something else")
	_, err := e.c.Manifest(context.Background(), e.ups, digestRoute(want))
	if !errors.Is(err, upstream.ErrDigestMismatch) {
		t.Fatalf("err = %v, want digest mismatch", err)
	}
	if keys := e.mem.Keys(); len(keys) != 0 {
		t.Fatalf("store holds %v", keys)
	}
}

func TestStorageDownDegradesToStreaming(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.store.broken.Store(true)
	d := e.up.setTag("v1", manifestBody("x"))
	if m, err := e.c.Manifest(ctx, e.ups, tagRoute("v1")); err != nil || m.Digest != d {
		t.Fatalf("manifest with storage down: %v", err)
	}
	body := []byte("layer bytes")
	bd := e.addBlob(body)
	got, err := readBlob(ctx, e.c, e.ups, blobRoute(bd), 0, -1)
	if err != nil || string(got) != string(body) {
		t.Fatalf("blob with storage down: %q, %v", got, err)
	}
	if !e.c.Degraded() || testutil.ToFloat64(e.m.StorageDegraded) != 1 {
		t.Fatal("not reported as degraded")
	}
	if err := e.c.CheckStorage(ctx); err == nil {
		t.Fatal("CheckStorage passed with storage down")
	}
	// Recovery: after the back-off the store is used again.
	e.store.broken.Store(false)
	e.clock.add(storageBackoff + time.Second)
	if err := e.c.CheckStorage(ctx); err != nil || e.c.Degraded() {
		t.Fatalf("not recovered: %v", err)
	}
	if _, err := readBlob(ctx, e.c, e.ups, blobRoute(bd), 0, -1); err != nil {
		t.Fatal(err)
	}
	waitStored(t, e.mem, blob.BlobKey(bd))
}

func digestRoute(d oci.Digest) route.Route {
	r := tagRoute("")
	r.Tag, r.Digest = "", d
	return r
}
