package harness

import "testing"

const hintHelm = `run test/all.sh once, or: (cd tools/helm && go build -ldflags "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1" -o ../../bin/tools/helm helm.sh/helm/v3/cmd/helm)`

// HelmBin is the helm binary (env HELM, else PATH or bin/tools/helm, which
// test/all.sh builds from tools/helm/go.mod). It fails the test with a
// hint when helm is missing.
func HelmBin(t testing.TB) string { return Binary(t, "helm", "HELM", hintHelm) }
