package blob

import (
	"fmt"
	"strings"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
)

// Storage layout (edge/README.md, "Storage"). Blobs and manifests are content-addressed and
// shared by every namespace; tag records are per namespace so one tenant can
// never move another's tag.

// BlobKey is where the blob with digest d is stored.
func BlobKey(d oci.Digest) string { return "blobs/" + d.Algorithm + "/" + d.Hex }

// ManifestKey is where the manifest with digest d is stored.
func ManifestKey(d oci.Digest) string { return "manifests/" + d.Algorithm + "/" + d.Hex }

// TagKey is where namespace's record of tag in prefix/repository is stored.
// The tag directory is "_tags", not "tags": no repository path segment
// can start with "_", so a repository named "x/tags/y" can never collide
// with the tag "y" of repository "x" on a filesystem.
// The caller has validated repository and tag; namespace and prefix are
// checked here because they come from configuration.
func TagKey(namespace, prefix, repository, tag string) (string, error) {
	for _, part := range []string{namespace, prefix} {
		if part == "" || strings.ContainsAny(part, "/.\\") {
			return "", fmt.Errorf("%w: bad path segment %q", ErrInvalidKey, part)
		}
	}
	if !oci.ValidRepository(repository) || !oci.ValidTag(tag) {
		return "", fmt.Errorf("%w: bad repository or tag", ErrInvalidKey)
	}
	return "tenants/" + namespace + "/" + prefix + "/" + repository + "/_tags/" + tag, nil
}

// ValidKey reports whether key is safe to map onto a file path or an object
// name: relative, no empty, "." or ".." segments, no backslashes or NULs.
// The first segment must not start with "_": the layout never produces such
// keys, so stores can keep their own bookkeeping there (the filesystem store
// keeps "_uploads" and "_meta" beside the objects).
func ValidKey(key string) bool {
	if key == "" || strings.HasPrefix(key, "/") || strings.HasPrefix(key, "_") || strings.ContainsAny(key, "\\\x00") {
		return false
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// ValidPrefix reports whether prefix is acceptable to Store.List: empty, or
// a key prefix that would be a valid key once a trailing "/" is removed. It
// may end inside a segment ("blobs/sha256/ab").
func ValidPrefix(prefix string) bool {
	return prefix == "" || ValidKey(strings.TrimSuffix(prefix, "/"))
}
