package cache

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
)

// brokerLike stands in for the storage broker's rules in front of a store:
// shared objects need a scope in the context, and reads or writes of them
// can be refused (blob.ErrDenied). The real broker client is tested in
// brokerstore against a gRPC server; this checks the cache's side.
type brokerLike struct {
	blob.Store
	denyReads, denyWrites bool

	mu       sync.Mutex
	unscoped []string // shared keys asked for without a scope
}

func (b *brokerLike) check(ctx context.Context, op, key string, deny bool) error {
	if strings.HasPrefix(key, "tenants/") {
		return nil
	}
	prefix, repo, ok := blob.ScopeFrom(ctx)
	if !ok || prefix != "test" || repo != "app" {
		b.mu.Lock()
		b.unscoped = append(b.unscoped, fmt.Sprintf("%s %s (scope %q %q)", op, key, prefix, repo))
		b.mu.Unlock()
	}
	if deny {
		return fmt.Errorf("broker %s %s: %w", op, key, blob.ErrDenied)
	}
	return nil
}

func (b *brokerLike) Stat(ctx context.Context, key string) (blob.Info, error) {
	if err := b.check(ctx, "stat", key, b.denyReads); err != nil {
		return blob.Info{}, err
	}
	return b.Store.Stat(ctx, key)
}

func (b *brokerLike) Open(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if err := b.check(ctx, "open", key, b.denyReads); err != nil {
		return nil, err
	}
	return b.Store.Open(ctx, key, off, n)
}

func (b *brokerLike) Create(ctx context.Context, key string, want blob.Expect) (blob.Writer, error) {
	if err := b.check(ctx, "create", key, b.denyWrites); err != nil {
		return nil, err
	}
	return b.Store.Create(ctx, key, want)
}

func (b *brokerLike) Put(ctx context.Context, key string, data []byte, ct string) error {
	if err := b.check(ctx, "put", key, b.denyWrites); err != nil {
		return err
	}
	return b.Store.Put(ctx, key, data, ct)
}

// TestBrokerDenialIsAMiss pulls a tag and a blob through a store that
// refuses shared objects: the client gets the bytes from the upstream,
// nothing shared is stored, storage is never reported degraded, and every
// shared key was asked for in the pull's scope.
func TestBrokerDenialIsAMiss(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                  string
		denyReads, denyWrites bool
		wantStored            bool
	}{
		{"reads and writes refused", true, true, false},
		{"writes refused", false, true, false},
		{"reads refused", true, false, true},
		{"granted", false, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			bl := &brokerLike{Store: e.mem, denyReads: tc.denyReads, denyWrites: tc.denyWrites}
			e.c.store = bl
			ctx := context.Background()
			md := e.up.setTag("v1", manifestBody("x"))
			body := []byte("layer bytes")
			bd := e.addBlob(body)
			for range 2 {
				if m, err := e.c.Manifest(ctx, e.ups, tagRoute("v1")); err != nil || m.Digest != md {
					t.Fatalf("manifest: %v", err)
				}
				if got, err := readBlob(ctx, e.c, e.ups, blobRoute(bd), 0, -1); err != nil || string(got) != string(body) {
					t.Fatalf("blob: %q, %v", got, err)
				}
				if size, _, err := e.c.BlobSize(ctx, e.ups, blobRoute(bd)); err != nil || size != int64(len(body)) {
					t.Fatalf("blob size: %d, %v", size, err)
				}
				waitFillsDone(t, e.c)
			}
			if e.c.Degraded() || testutil.ToFloat64(e.m.StorageDegraded) != 0 {
				t.Fatal("a refusal marked storage degraded")
			}
			if n := testutil.CollectAndCount(e.m.StorageErrors); n != 0 {
				t.Fatalf("%d storage error series after refusals only", n)
			}
			denied := testutil.ToFloat64(e.m.StorageDenied.WithLabelValues("stat")) +
				testutil.ToFloat64(e.m.StorageDenied.WithLabelValues("create"))
			if (tc.denyReads || tc.denyWrites) != (denied > 0) {
				t.Fatalf("denied counter = %v", denied)
			}
			_, err := e.mem.Stat(ctx, blob.BlobKey(bd))
			if stored := err == nil; stored != tc.wantStored {
				t.Fatalf("blob stored = %v, want %v", stored, tc.wantStored)
			}
			if tc.denyReads && e.up.blobGets.Load() != 2 {
				t.Fatalf("upstream blob GETs = %d, want 2 (no read from storage)", e.up.blobGets.Load())
			}
			if err := e.c.CheckStorage(ctx); err != nil {
				t.Fatalf("CheckStorage: %v", err)
			}
			bl.mu.Lock()
			defer bl.mu.Unlock()
			if len(bl.unscoped) > 0 {
				t.Fatalf("shared keys without the pull's scope: %v", bl.unscoped)
			}
		})
	}
}

// TestTagRecordFromTheFuture: a record checked "in 2099" is treated as
// checked now and rewritten so, so it is revalidated one TTL later instead
// of never.
func TestTagRecordFromTheFuture(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	d := e.up.setTag("v1", manifestBody("x"))
	if _, err := e.c.Manifest(ctx, e.ups, tagRoute("v1")); err != nil {
		t.Fatal(err)
	}
	key, err := blob.TagKey("team-a", "test", "app", "v1")
	if err != nil {
		t.Fatal(err)
	}
	future := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	rec, _ := json.Marshal(tagRecord{Digest: d.String(), MediaType: "application/vnd.oci.image.manifest.v1+json", FetchedAt: future, LastChecked: future})
	if err := e.mem.Put(ctx, key, rec, "application/json"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.Manifest(ctx, e.ups, tagRoute("v1")); err != nil {
		t.Fatal(err)
	}
	if n := e.up.manifestHeads.Load(); n != 0 {
		t.Fatalf("HEADs right after = %d, want 0 (treated as checked now)", n)
	}
	got, err := e.c.readTag(ctx, key)
	if err != nil || !got.LastChecked.Equal(e.clock.now()) || !got.FetchedAt.Equal(e.clock.now()) {
		t.Fatalf("stored record = %+v, %v; want times clamped to %v", got, err, e.clock.now())
	}
	e.clock.add(time.Minute + time.Second)
	if _, err := e.c.Manifest(ctx, e.ups, tagRoute("v1")); err != nil {
		t.Fatal(err)
	}
	if n := e.up.manifestHeads.Load(); n != 1 {
		t.Fatalf("HEADs one TTL later = %d, want 1", n)
	}
}
