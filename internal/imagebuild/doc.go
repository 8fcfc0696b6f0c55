// Package imagebuild builds the container images of the control plane and
// the edge from this repository without a Docker daemon or a base image:
// static Go binaries (CGO_ENABLED=0, -trimpath) are put, with the build
// machine's CA bundle and passwd/group entries for the non-root user 65532,
// into a single gzip layer per platform, and the platform images are joined
// by an OCI image index.
//
// Everything that goes into an image is fixed by the source commit: tar
// entries are sorted and carry fixed owners and mtimes, the created time
// comes from SOURCE_DATE_EPOCH or the commit time, and the Go build has no
// build ID and no VCS stamp, so two builds of one commit on the same
// toolchain give the same digests. The result is written as an OCI image
// layout, as OCI layout tar archives that `ctr images import` accepts, or
// pushed to a registry. docs/images.md describes the images and the command
// cmd/build-images that wraps this package.
package imagebuild
