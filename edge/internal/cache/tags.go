package cache

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/edge/internal/route"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream"
)

// Tags passes a tag list request through to the upstream. Lists are not
// cached: they change whenever anything is pushed, and clients rarely ask.
// ups is the request's configuration snapshot.
func (c *Cache) Tags(ctx context.Context, ups Upstreams, rt route.Route, query url.Values) (*upstream.TagList, error) {
	f, err := fetcher(ups, rt.Prefix)
	if err != nil {
		return nil, err
	}
	if err := c.allowUpstream("tags"); err != nil {
		return nil, err
	}
	tl, err := f.Tags(ctx, rt.Repository, query)
	c.countUpstream(rt.Prefix, "tags", http.MethodGet, err)
	if err != nil {
		return nil, fmt.Errorf("list tags %s/%s: %w", rt.Prefix, rt.Repository, err)
	}
	return tl, nil
}
