package harness

import (
	"fmt"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Image describes an image or index pushed by the harness, with everything
// a test needs to compare what a client got against what was pushed.
type Image struct {
	// Registry is the host:port it was pushed to; Repo its repository.
	Registry, Repo, Tag string
	// Digest is the manifest (or index) digest, "sha256:...".
	Digest    string
	MediaType types.MediaType
	// Manifest is the raw manifest or index as pushed.
	Manifest []byte
	// Config is the config blob digest; Layers the layer digests in order
	// (both empty for an index).
	Config string
	Layers []string
	// Children are the platform images of an index.
	Children []Image
	// Platform is set on an index's children.
	Platform *v1.Platform
}

// Blobs returns every blob digest the image references, children included.
func (im Image) Blobs() []string {
	var out []string
	if im.Config != "" {
		out = append(out, im.Config)
	}
	out = append(out, im.Layers...)
	for _, c := range im.Children {
		out = append(out, c.Blobs()...)
	}
	return out
}

// Ref returns repo:tag on registry host, e.g. for an edge address and a
// prefix: im.Ref("127.0.0.1:5000", "test").
func (im Image) Ref(host, prefix string) string {
	return refPath(host, prefix, im.Repo) + ":" + im.Tag
}

// DigestRef returns repo@digest on host under prefix.
func (im Image) DigestRef(host, prefix string) string {
	return refPath(host, prefix, im.Repo) + "@" + im.Digest
}

func refPath(host, prefix, repo string) string {
	if prefix == "" {
		return host + "/" + repo
	}
	return host + "/" + prefix + "/" + repo
}

// Images is the standard set the end-to-end tests pull.
type Images struct {
	Schema2 Image // Docker schema2 manifest, gzip layers
	OCI     Image // OCI manifest, gzip layers
	Index   Image // OCI index of linux/amd64 and linux/arm64 OCI images
}

// PushImages pushes the standard set under repoBase (e.g. "e2e" →
// e2e/schema2:v1, e2e/oci:v1, e2e/multiarch:v1) to registry host:port.
// Content is random, so every call makes blobs no cache has seen.
func PushImages(t testing.TB, registry, repoBase string) Images {
	t.Helper()
	return Images{
		Schema2: PushImage(t, registry, repoBase+"/schema2", "v1", types.DockerManifestSchema2, 3, 512<<10),
		OCI:     PushImage(t, registry, repoBase+"/oci", "v1", types.OCIManifestSchema1, 3, 512<<10),
		Index:   PushIndex(t, registry, repoBase+"/multiarch", "v1", 2, 256<<10),
	}
}

// layerType is the gzip layer media type that goes with a manifest type.
func layerType(mt types.MediaType) types.MediaType {
	if mt == types.OCIManifestSchema1 {
		return types.OCILayer
	}
	return types.DockerLayer
}

// BuildImage makes an image of the manifest type mt (Docker schema2 or OCI)
// for platform with n random gzip layers of layerSize bytes each.
func BuildImage(mt types.MediaType, platform v1.Platform, n int, layerSize int64) (v1.Image, error) {
	var layers []v1.Layer
	for i := 0; i < n; i++ {
		l, err := random.Layer(layerSize, layerType(mt))
		if err != nil {
			return nil, fmt.Errorf("random layer: %w", err)
		}
		layers = append(layers, l)
	}
	return buildImage(mt, platform, layers...)
}

// buildImage sets the config a container runtime wants (os/architecture must
// match the node, or containerd finds "no match for platform in manifest")
// and appends layers.
func buildImage(mt types.MediaType, platform v1.Platform, layers ...v1.Layer) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, mt)
	if mt == types.OCIManifestSchema1 {
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Variant = platform.OS, platform.Architecture, platform.Variant
	cfg.Config.Cmd = []string{"/bin/true"}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return nil, fmt.Errorf("set config: %w", err)
	}
	if img, err = mutate.AppendLayers(img, layers...); err != nil {
		return nil, fmt.Errorf("append layers: %w", err)
	}
	return img, nil
}

// HostPlatform is the platform containerd on this machine pulls.
var HostPlatform = v1.Platform{OS: "linux", Architecture: "amd64"}

// PushImage builds and pushes a single-platform image to registry/repo:tag.
func PushImage(t testing.TB, registry, repo, tag string, mt types.MediaType, layers int, layerSize int64) Image {
	t.Helper()
	img, err := BuildImage(mt, HostPlatform, layers, layerSize)
	if err != nil {
		t.Fatalf("build image %s: %v", repo, err)
	}
	return pushImage(t, registry, repo, tag, img)
}

func pushImage(t testing.TB, registry, repo, tag string, img v1.Image) Image {
	t.Helper()
	ref, err := name.NewTag(registry+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		t.Fatalf("parse tag: %v", err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	im, err := describeImage(img)
	if err != nil {
		t.Fatalf("describe %s: %v", ref, err)
	}
	im.Registry, im.Repo, im.Tag = registry, repo, tag
	return im
}

func describeImage(img v1.Image) (Image, error) {
	var im Image
	d, err := img.Digest()
	if err != nil {
		return im, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return im, err
	}
	mt, err := img.MediaType()
	if err != nil {
		return im, err
	}
	m, err := img.Manifest()
	if err != nil {
		return im, err
	}
	im.Digest, im.Manifest, im.MediaType = d.String(), raw, mt
	im.Config = m.Config.Digest.String()
	for _, l := range m.Layers {
		im.Layers = append(im.Layers, l.Digest.String())
	}
	return im, nil
}

// PushIndex pushes an OCI index of a linux/amd64 and a linux/arm64 OCI
// image, each with layers random layers of layerSize bytes.
func PushIndex(t testing.TB, registry, repo, tag string, layers int, layerSize int64) Image {
	t.Helper()
	platforms := []v1.Platform{HostPlatform, {OS: "linux", Architecture: "arm64", Variant: "v8"}}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var children []Image
	for _, p := range platforms {
		img, err := BuildImage(types.OCIManifestSchema1, p, layers, layerSize)
		if err != nil {
			t.Fatalf("build %s image: %v", p, err)
		}
		child, err := describeImage(img)
		if err != nil {
			t.Fatalf("describe %s image: %v", p, err)
		}
		p := p
		child.Registry, child.Repo, child.Platform = registry, repo, &p
		children = append(children, child)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        plainDescriptor{img},
			Descriptor: v1.Descriptor{MediaType: types.OCIManifestSchema1, Platform: &p},
		})
	}
	ref, err := name.NewTag(registry+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		t.Fatalf("parse tag: %v", err)
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatalf("push index %s: %v", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatalf("index digest: %v", err)
	}
	raw, err := idx.RawManifest()
	if err != nil {
		t.Fatalf("raw index: %v", err)
	}
	return Image{Registry: registry, Repo: repo, Tag: tag, Digest: d.String(), MediaType: types.OCIImageIndex, Manifest: raw, Children: children}
}

// PushBigImage pushes an OCI image whose single layer is an uncompressed tar
// of at least size bytes of pseudo-random data. The layer is generated on
// the fly from a seed (see bigLayer), so it costs no memory and no gzip.
func PushBigImage(t testing.TB, registry, repo, tag string, size int64) Image {
	t.Helper()
	l, err := newBigLayer(size, types.OCIUncompressedLayer)
	if err != nil {
		t.Fatalf("big layer: %v", err)
	}
	img, err := buildImage(types.OCIManifestSchema1, HostPlatform, l)
	if err != nil {
		t.Fatalf("build big image: %v", err)
	}
	return pushImage(t, registry, repo, tag, img)
}

// plainDescriptor makes mutate.AppendManifests describe an image the way
// Docker Hub's indexes do: go-containerregistry would otherwise add an
// artifactType (the config media type) to every entry, which skopeo 1.9
// cannot round-trip, so `skopeo copy --all --preserve-digests` fails.
type plainDescriptor struct{ v1.Image }

// Descriptor is found by partial.Descriptor and used as is.
func (p plainDescriptor) Descriptor() (*v1.Descriptor, error) {
	var d v1.Descriptor
	var err error
	if d.Size, err = p.Size(); err != nil {
		return nil, err
	}
	if d.Digest, err = p.Digest(); err != nil {
		return nil, err
	}
	if d.MediaType, err = p.MediaType(); err != nil {
		return nil, err
	}
	return &d, nil
}
