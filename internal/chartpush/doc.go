// Package chartpush packages a Helm chart directory into a reproducible
// chart archive and pushes it to an OCI registry as a Helm chart artifact
// (config application/vnd.cncf.helm.config.v1+json, one layer
// application/vnd.cncf.helm.chart.content.v1.tar+gzip), tagged with the
// chart's version, so that `helm install NAME oci://REGISTRY/PATH/CHART
// --version VERSION` installs it (docs/images.md, "The chart as an OCI
// artifact"). It needs no helm binary: the artifact is what `helm package`
// followed by `helm push` makes, minus helm's build-time timestamps.
package chartpush
