package chartpush

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Helm's media types (helm.sh/helm/v3/pkg/registry/constants.go).
const (
	ConfigMediaType types.MediaType = "application/vnd.cncf.helm.config.v1+json"
	ChartMediaType  types.MediaType = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
)

// Pushed is where a chart went.
type Pushed struct {
	// Repository is "oci://REGISTRY/PATH/NAME", what helm install takes.
	Repository string
	// Version is the tag and `--version`.
	Version string
	// Digest is the manifest's digest.
	Digest v1.Hash
}

// Target parses dest, "oci://REGISTRY/PATH" (the oci:// is optional), into
// the repository the chart called chartName goes to: REGISTRY/PATH/chartName,
// as `helm push CHART.tgz oci://REGISTRY/PATH` names it. insecure allows
// plain HTTP to any registry; loopback and private addresses use it anyway.
func Target(dest, chartName string, insecure bool) (name.Repository, error) {
	d := strings.TrimSuffix(strings.TrimPrefix(dest, "oci://"), "/")
	if d == "" {
		return name.Repository{}, fmt.Errorf("chart destination %q: empty", dest)
	}
	if host, _, _ := strings.Cut(d, "/"); !strings.ContainsAny(host, ".:") && host != "localhost" {
		// name.NewRepository would read "myorg/charts" as a Docker Hub
		// path; helm push wants the registry spelled out, and so do we.
		return name.Repository{}, fmt.Errorf("chart destination %q: %q is not a registry host", dest, host)
	}
	opts := []name.Option{name.StrictValidation}
	if insecure {
		opts = append(opts, name.Insecure)
	}
	repo, err := name.NewRepository(d+"/"+chartName, opts...)
	if err != nil {
		return name.Repository{}, fmt.Errorf("chart destination %q: %w", dest, err)
	}
	return repo, nil
}

// Push uploads c to repo as a Helm chart artifact tagged c.Version, with
// credentials from ~/.docker/config.json and its helpers (as helm registry
// login and docker login store them). created is the manifest's
// org.opencontainers.image.created annotation.
func Push(ctx context.Context, c *Chart, repo name.Repository, created time.Time) (Pushed, error) {
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)}
	config, layer := static.NewLayer(c.Config, ConfigMediaType), static.NewLayer(c.Archive, ChartMediaType)
	m, err := manifest(c, config, layer, created)
	if err != nil {
		return Pushed{}, fmt.Errorf("push chart %s: %w", repo, err)
	}
	for _, l := range []v1.Layer{config, layer} {
		if err := remote.WriteLayer(repo, l, opts...); err != nil {
			return Pushed{}, fmt.Errorf("push chart %s: blob: %w", repo, err)
		}
	}
	tag := repo.Tag(c.Version)
	if err := remote.Put(tag, m, opts...); err != nil {
		return Pushed{}, fmt.Errorf("push chart %s: manifest: %w", tag, err)
	}
	return Pushed{Repository: "oci://" + repo.String(), Version: c.Version, Digest: m.digest}, nil
}

// rawManifest is an OCI image manifest remote.Put uploads as it is.
type rawManifest struct {
	raw    []byte
	digest v1.Hash
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.raw, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }

// manifest is the manifest helm push writes: the config, one chart layer,
// and the annotations Helm derives from Chart.yaml.
func manifest(c *Chart, config, layer v1.Layer, created time.Time) (rawManifest, error) {
	descs := make([]v1.Descriptor, 2)
	for i, l := range []v1.Layer{config, layer} {
		d, err := l.Digest()
		if err != nil {
			return rawManifest{}, err
		}
		size, err := l.Size()
		if err != nil {
			return rawManifest{}, err
		}
		mt, err := l.MediaType()
		if err != nil {
			return rawManifest{}, err
		}
		descs[i] = v1.Descriptor{MediaType: mt, Digest: d, Size: size}
	}
	ann := map[string]string{
		"org.opencontainers.image.title":   c.Name,
		"org.opencontainers.image.version": c.Version,
		"org.opencontainers.image.created": created.UTC().Format(time.RFC3339),
	}
	if c.Description != "" {
		ann["org.opencontainers.image.description"] = c.Description
	}
	if c.Home != "" {
		ann["org.opencontainers.image.url"] = c.Home
	}
	raw, err := json.Marshal(v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: descs[0], Layers: descs[1:], Annotations: ann})
	if err != nil {
		return rawManifest{}, fmt.Errorf("encode manifest: %w", err)
	}
	d, _, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return rawManifest{}, err
	}
	return rawManifest{raw: raw, digest: d}, nil
}
