package imagebuild

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// DefaultPrefix is the repository prefix the chart's values.yaml uses for
// image.repository and edge.image.repository.
const DefaultPrefix = "ghcr.io/k8s-selfhost-repo"

// DefaultCACertFile is where Debian (and the Go standard library on Linux)
// keeps the CA bundle; it is copied into the image at the same path.
const DefaultCACertFile = "/etc/ssl/certs/ca-certificates.crt"

// Target is one command of the repository that becomes an image.
type Target struct {
	// Name is the image name under the prefix and the binary's name.
	Name string
	// Package is the main package, relative to the repository root
	// ("./edge/cmd/edge").
	Package string
	// Description is the org.opencontainers.image.description.
	Description string
}

// DefaultTargets returns the control plane, the edge and the node-local
// forwarder (docs/kubernetes.md, "Node access").
func DefaultTargets() []Target {
	return []Target{
		{Name: "controlplane", Package: "./controlplane/cmd/controlplane",
			Description: "k8s-selfhost-repo control plane: edge configuration, namespace controller, image-rewriting webhook"},
		{Name: "edge", Package: "./edge/cmd/edge",
			Description: "k8s-selfhost-repo edge: pull-through OCI registry cache of one namespace"},
		{Name: "forwarder", Package: "./forwarder/cmd/forwarder",
			Description: "k8s-selfhost-repo forwarder: 127.0.0.1:<nodePort> to each edge Service on nodes whose Service proxy does not forward loopback NodePorts"},
	}
}

// DefaultPlatforms returns linux/amd64 and linux/arm64.
func DefaultPlatforms() []v1.Platform {
	return []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}
}

// ParsePlatforms parses a comma-separated list such as
// "linux/amd64,linux/arm64". Only linux/amd64 and linux/arm64 are accepted:
// they are the platforms the binaries are built and tested for.
func ParsePlatforms(s string) ([]v1.Platform, error) {
	var out []v1.Platform
	seen := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if f != "linux/amd64" && f != "linux/arm64" {
			return nil, fmt.Errorf("parse platforms: %q is not linux/amd64 or linux/arm64", f)
		}
		if seen[f] {
			return nil, fmt.Errorf("parse platforms: %q given twice", f)
		}
		seen[f] = true
		os, arch, _ := strings.Cut(f, "/")
		out = append(out, v1.Platform{OS: os, Architecture: arch})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("parse platforms: no platform in %q", s)
	}
	return out, nil
}

// Options configures Build. The zero value builds both default targets for
// both default platforms from the repository that contains the working
// directory, under DefaultPrefix, with the chart's appVersion.
type Options struct {
	// RepoRoot is the repository root (the directory of the root go.mod);
	// "" finds it from the working directory.
	RepoRoot string
	// Targets default to DefaultTargets.
	Targets []Target
	// Platforms default to DefaultPlatforms.
	Platforms []v1.Platform
	// Prefix is the repository prefix of the image references
	// (<Prefix>/<target>:<Version>); "" means DefaultPrefix.
	Prefix string
	// Insecure lets Push use plain HTTP for a registry that is not on
	// loopback or a private address (those use HTTP anyway).
	Insecure bool
	// Version is the image tag and the binaries' main.buildVersion; ""
	// means appVersion of charts/k8s-selfhost-repo/Chart.yaml.
	Version string
	// Source is org.opencontainers.image.source; "" means the chart's home.
	Source string
	// Revision is org.opencontainers.image.revision; "" means the commit of
	// HEAD (git rev-parse HEAD).
	Revision string
	// Created is the image's created time and every file's mtime; zero
	// means the commit time of HEAD. See ParseSourceDateEpoch.
	Created time.Time
	// CACertFile is the CA bundle copied into the image; "" means
	// DefaultCACertFile.
	CACertFile string
	// Go is the go command; "" means "go" from PATH.
	Go string
	// Log receives progress; nil discards it.
	Log *slog.Logger
}
