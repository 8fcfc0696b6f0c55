package proof

import (
	"container/list"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
)

// references is what one stored manifest points at.
type references struct {
	blobs     map[oci.Digest]bool // config, layers, artifact blobs
	manifests map[oci.Digest]bool // children of an index
}

// parseReferences reads the descriptors of an image manifest or an index
// (OCI and Docker). Unknown fields are ignored; a descriptor whose digest
// does not parse is skipped, so nothing unparsable is ever granted.
func parseReferences(body []byte) (*references, error) {
	type descriptor struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
	}
	var m struct {
		Config    *descriptor  `json:"config"`
		Layers    []descriptor `json:"layers"`
		Blobs     []descriptor `json:"blobs"`
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	r := &references{blobs: map[oci.Digest]bool{}, manifests: map[oci.Digest]bool{}}
	add := func(set map[oci.Digest]bool, d descriptor) {
		if dg, err := oci.ParseDigest(d.Digest); err == nil {
			set[dg] = true
		}
	}
	if m.Config != nil {
		add(r.blobs, *m.Config)
	}
	for _, l := range m.Layers {
		add(r.blobs, l)
	}
	for _, l := range m.Blobs {
		add(r.blobs, l)
	}
	for _, c := range m.Manifests {
		add(r.manifests, c)
	}
	return r, nil
}

// refCache keeps the references of recently used manifests; manifests are
// immutable (content addressed), so entries never go stale.
type refCache struct {
	store blob.Store
	size  int
	mu    sync.Mutex
	ll    *list.List
	byKey map[oci.Digest]*list.Element
}

type refEntry struct {
	d oci.Digest
	r *references
}

func newRefCache(store blob.Store, size int) *refCache {
	return &refCache{store: store, size: size, ll: list.New(), byKey: map[oci.Digest]*list.Element{}}
}

func (c *refCache) get(ctx context.Context, d oci.Digest) (*references, error) {
	c.mu.Lock()
	if el, ok := c.byKey[d]; ok {
		c.ll.MoveToFront(el)
		c.mu.Unlock()
		return el.Value.(*refEntry).r, nil
	}
	c.mu.Unlock()
	rc, err := c.store.Open(ctx, blob.ManifestKey(d), 0, -1)
	if err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", d, err)
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, oci.MaxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", d, err)
	}
	// Stored manifests were verified when written; checking again costs
	// little and keeps a corrupted object from granting anything.
	h := d.Hash()
	h.Write(body)
	if !d.Matches(h) {
		return nil, fmt.Errorf("read manifest %s: %w", d, blob.ErrVerify)
	}
	r, err := parseReferences(body)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", d, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byKey[d]; !ok {
		c.byKey[d] = c.ll.PushFront(&refEntry{d, r})
		for c.ll.Len() > c.size {
			old := c.ll.Remove(c.ll.Back()).(*refEntry)
			delete(c.byKey, old.d)
		}
	}
	return r, nil
}
