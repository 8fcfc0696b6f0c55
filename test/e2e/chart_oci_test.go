package e2e

// The chart as an OCI artifact (docs/images.md, "The chart as an OCI
// artifact"): `build-images --chart-push` pushes it to a real Debian
// docker-registry, and the real helm reads it back with oci:// references.

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

func TestChartOCI(t *testing.T) {
	h := newHelm(t)
	raw, err := os.ReadFile(filepath.Join(h.chart, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct{ Name, Version, AppVersion string }
	if err := yaml.Unmarshal(raw, &meta); err != nil {
		t.Fatal(err)
	}
	// The same chart rendered from the checkout: what comes back from the
	// registry must render byte for byte the same.
	localArgs := []string{"template", "selfhost", h.chart, "--namespace", releaseNS, "--kube-version", chartKubeVersion}
	local, err := h.run(localArgs...)
	if err != nil {
		t.Fatal(err)
	}
	reg := harness.StartDockerRegistry(t)

	tests := []struct {
		name      string
		plainHTTP bool // build-images --insecure; the loopback registry is HTTP either way
	}{
		{name: "loopback"},
		{name: "insecure flag", plainHTTP: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ref, version := harness.PushChart(t, reg.Addr, tt.plainHTTP)
			if want := "oci://" + reg.Addr + "/charts/" + meta.Name; ref != want || version != meta.Version {
				t.Fatalf("pushed %s --version %s, want %s --version %s", ref, version, want, meta.Version)
			}

			show, err := h.run("show", "chart", ref, "--version", version, "--plain-http")
			if err != nil {
				t.Fatal(err)
			}
			var shown struct{ Name, Version, AppVersion string }
			if err := yaml.Unmarshal([]byte(show), &shown); err != nil {
				t.Fatalf("helm show chart: %v\n%s", err, show)
			}
			if shown != meta {
				t.Errorf("helm show chart %s: %+v, want %+v", ref, shown, meta)
			}

			out, err := h.run("template", "selfhost", ref, "--version", version, "--plain-http",
				"--namespace", releaseNS, "--kube-version", chartKubeVersion)
			if err != nil {
				t.Fatal(err)
			}
			if out != local {
				t.Errorf("helm template %s differs from the checkout's chart:\n%s\n--- want ---\n%s", ref, out, local)
			}
			dep := decodeDoc[appsv1.Deployment](t, splitManifests(t, out), "Deployment/"+chartName)
			c := dep.Spec.Template.Spec.Containers[0]
			if want := "ghcr.io/k8s-selfhost-repo/controlplane:" + meta.AppVersion; c.Image != want {
				t.Errorf("control plane image %s, want %s", c.Image, want)
			}
			if want := "--edge-image=ghcr.io/k8s-selfhost-repo/edge:" + meta.AppVersion; !slices.Contains(c.Args, want) {
				t.Errorf("args %q lack %q", c.Args, want)
			}

			// Without --version helm takes the highest semver tag: the same.
			latest, err := h.run("show", "chart", ref, "--plain-http")
			if err != nil {
				t.Fatal(err)
			}
			if latest != show {
				t.Errorf("helm show chart without --version:\n%s\nwant\n%s", latest, show)
			}
			if !strings.Contains(show, "name: "+meta.Name) {
				t.Errorf("helm show chart: %s", show)
			}
		})
	}
}
