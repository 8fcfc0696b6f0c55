package oci

import "strings"

// Manifest media types the edge stores and serves byte-for-byte.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeOCIManifest        = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeOCIIndex           = "application/vnd.oci.image.index.v1+json"
)

// ManifestAccept is the Accept header sent upstream: every manifest type the
// edge can pass through, so the upstream never down-converts to schema1.
var ManifestAccept = strings.Join([]string{
	MediaTypeOCIIndex,
	MediaTypeOCIManifest,
	MediaTypeDockerManifestList,
	MediaTypeDockerManifest,
}, ", ")

// MaxManifestSize is the largest manifest body the edge accepts (4 MiB, the
// limit distribution and containerd use).
const MaxManifestSize = 4 << 20

// IsManifestMediaType reports whether mt (parameters ignored) is one of the
// manifest media types above.
func IsManifestMediaType(mt string) bool {
	mt, _, _ = strings.Cut(mt, ";")
	switch strings.TrimSpace(mt) {
	case MediaTypeDockerManifest, MediaTypeDockerManifestList, MediaTypeOCIManifest, MediaTypeOCIIndex:
		return true
	}
	return false
}
