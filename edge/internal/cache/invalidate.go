package cache

import (
	"context"
	"fmt"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
)

// InvalidateTag forgets this namespace's record of prefix/repository:tag,
// so the next pull of the tag goes upstream. The manifest and blobs stay:
// they are content-addressed and may be shared. prefix must be canonical
// and repository normalised (Docker Hub's "library/"), as in a route.
func (c *Cache) InvalidateTag(ctx context.Context, prefix, repository, tag string) error {
	key, err := blob.TagKey(c.namespace, prefix, repository, tag)
	if err != nil {
		return fmt.Errorf("invalidate tag %s/%s:%s: %w", prefix, repository, tag, err)
	}
	// A record is the namespace's own and needs no scope; it is set anyway
	// so every entry point hands the store the same context.
	ctx = blob.WithScope(ctx, prefix, repository)
	if err := c.store.Delete(ctx, key); err != nil {
		c.noteStoreErr("delete", err)
		return fmt.Errorf("invalidate tag %s/%s:%s: %w", prefix, repository, tag, err)
	}
	return nil
}
