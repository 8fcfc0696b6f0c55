package harness

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// BuildImagesBinary returns cmd/build-images: $HARNESS_BUILD_IMAGES_BIN when
// set, else built from this checkout once per test binary.
func BuildImagesBinary(t testing.TB) string {
	t.Helper()
	return goBinary(t, "HARNESS_BUILD_IMAGES_BIN", "./cmd/build-images")
}

// PushChart pushes this checkout's charts/k8s-selfhost-repo to the registry
// at registryAddr (host:port) with the documented command,
// `build-images --chart-push oci://<registryAddr>/charts` (docs/images.md,
// "The chart as an OCI artifact"), and returns what helm takes:
// ref "oci://<registryAddr>/charts/k8s-selfhost-repo" and the chart's
// version for --version. plainHTTP adds --insecure, for a plain-HTTP
// registry that is not on loopback or a private address (those are spoken
// to over HTTP anyway); helm itself then needs --plain-http.
func PushChart(t testing.TB, registryAddr string, plainHTTP bool) (ref, version string) {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--chart-push", "oci://" + registryAddr + "/charts", "--repo", root}
	if plainHTTP {
		args = append(args, "--insecure")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, BuildImagesBinary(t), args...)
	cmd.Dir = root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("build-images %s: %v\n%s%s", strings.Join(args, " "), err, stderr.String(), stdout.String())
	}
	ref, version, err = parseChartPushed(stdout.String())
	if err != nil {
		t.Fatalf("build-images %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return ref, version
}

// parseChartPushed reads the CHART/VERSION/DIGEST table build-images prints
// after pushing the chart.
func parseChartPushed(out string) (ref, version string, err error) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "CHART\t") && i+1 < len(lines) {
			f := strings.Split(lines[i+1], "\t")
			if len(f) == 3 && strings.HasPrefix(f[0], "oci://") && f[1] != "" {
				return f[0], f[1], nil
			}
		}
	}
	return "", "", fmt.Errorf("no pushed chart in the output %q", out)
}
