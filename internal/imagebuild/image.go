package imagebuild

import (
	"fmt"
	"path"
	"strconv"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// OCI annotation keys (github.com/opencontainers/image-spec annotations.md)
// set as config labels, manifest annotations and index annotations.
const (
	AnnotationSource      = "org.opencontainers.image.source"
	AnnotationRevision    = "org.opencontainers.image.revision"
	AnnotationVersion     = "org.opencontainers.image.version"
	AnnotationTitle       = "org.opencontainers.image.title"
	AnnotationCreated     = "org.opencontainers.image.created"
	AnnotationDescription = "org.opencontainers.image.description"
	// AnnotationRefName names an image in an OCI layout's index.json.
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// annotationContainerdName is the name containerd's importer takes
	// as is, before the ref.name (which ctr would otherwise prefix).
	annotationContainerdName = "io.containerd.image.name"
)

// meta is what every image of one build shares.
type meta struct {
	Version, Source, Revision string
	Created                   time.Time
}

// annotations are the OCI labels of target t.
func (m meta) annotations(t Target) map[string]string {
	a := map[string]string{
		AnnotationSource:   m.Source,
		AnnotationRevision: m.Revision,
		AnnotationVersion:  m.Version,
		AnnotationTitle:    t.Name,
		AnnotationCreated:  m.Created.UTC().Format(time.RFC3339),
	}
	if t.Description != "" {
		a[AnnotationDescription] = t.Description
	}
	return a
}

// platformImage is the single-layer image of target t's binary for p.
func platformImage(t Target, p v1.Platform, m meta, binary, caCerts []byte) (v1.Image, error) {
	tarBytes, err := layerTar(rootfsEntries(t.Name, binary, caCerts), m.Created)
	if err != nil {
		return nil, fmt.Errorf("layer of %s for %s: %w", t.Name, platformString(p), err)
	}
	layer, err := gzipLayer(tarBytes)
	if err != nil {
		return nil, fmt.Errorf("layer of %s for %s: %w", t.Name, platformString(p), err)
	}
	user := strconv.Itoa(UID) + ":" + strconv.Itoa(UID)
	cfg := &v1.ConfigFile{
		Architecture: p.Architecture,
		OS:           p.OS,
		Created:      v1.Time{Time: m.Created},
		Config: v1.Config{
			Entrypoint: []string{path.Join(BinDir, t.Name)},
			User:       user,
			WorkingDir: HomeDir,
			Env: []string{
				"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				"SSL_CERT_FILE=" + CACertPath,
			},
			Labels: m.annotations(t),
		},
		RootFS: v1.RootFS{Type: "layers"},
	}
	img, err := mutate.ConfigFile(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON), cfg)
	if err != nil {
		return nil, fmt.Errorf("config of %s for %s: %w", t.Name, platformString(p), err)
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   v1.Time{Time: m.Created},
			CreatedBy: "build-images: " + t.Package + " at " + path.Join(BinDir, t.Name) + ", CA bundle, passwd/group",
			Comment:   "k8s-selfhost-repo " + m.Version,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("append layer of %s for %s: %w", t.Name, platformString(p), err)
	}
	return mutate.Annotations(img, m.annotations(t)).(v1.Image), nil
}

// imageIndex joins the platform images of target t.
func imageIndex(t Target, m meta, platforms []v1.Platform, imgs []v1.Image) v1.ImageIndex {
	adds := make([]mutate.IndexAddendum, len(imgs))
	for i, img := range imgs {
		p := platforms[i]
		adds[i] = mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}}
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
	return mutate.Annotations(idx, m.annotations(t)).(v1.ImageIndex)
}
