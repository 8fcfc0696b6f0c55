// Package oci holds the small pieces of the OCI Distribution Spec that the
// edge and the control plane speak: digests, repository and tag grammar,
// manifest media types and the registry's error codes. It depends on no
// other package of this repository, so storage, upstream and HTTP code can
// all import it.
package oci
