// Package oci holds the small pieces of the OCI Distribution Spec that every
// other edge package speaks: digests, repository and tag grammar, manifest
// media types and the registry's error codes. It has no dependencies on the
// rest of the edge, so storage, upstream and HTTP code can all import it.
package oci
