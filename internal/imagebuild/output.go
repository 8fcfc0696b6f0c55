package imagebuild

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// refAnnotations name an index in a layout's index.json: ref.name for OCI
// tools (skopeo oci:DIR:REF, crane), io.containerd.image.name for
// `ctr images import`, which takes that name as is.
func refAnnotations(ref name.Reference) map[string]string {
	return map[string]string{AnnotationRefName: ref.Name(), annotationContainerdName: ref.Name()}
}

// layoutIndex is the index.json of a layout holding images: one
// descriptor per image, named by its reference.
func layoutIndex(images ...Image) v1.ImageIndex {
	adds := make([]mutate.IndexAddendum, len(images))
	for i, im := range images {
		adds[i] = mutate.IndexAddendum{Add: im.Index, Descriptor: v1.Descriptor{Annotations: refAnnotations(im.Ref)}}
	}
	return mutate.AppendManifests(empty.Index, adds...)
}

// WriteLayout writes every image into an OCI image layout at dir, whose
// index.json lists each image's index under its full reference. dir must
// not exist, be empty, or hold an earlier layout, which is replaced.
func (r *Result) WriteLayout(dir string) error {
	if err := clearLayout(dir); err != nil {
		return err
	}
	if _, err := layout.Write(dir, layoutIndex(r.Images...)); err != nil {
		return fmt.Errorf("write OCI layout %s: %w", dir, err)
	}
	return nil
}

// clearLayout removes an earlier layout's files from dir, so no blob of an
// older build stays behind, and refuses a directory holding anything else.
func clearLayout(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && len(entries) == 0) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read output directory: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
		return fmt.Errorf("output directory %s is not empty and holds no OCI layout: refusing to write into it", dir)
	}
	for _, n := range []string{"blobs", "index.json", "oci-layout"} {
		if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
			return fmt.Errorf("remove the earlier layout: %w", err)
		}
	}
	return nil
}

// ArchiveName is the file name WriteArchives gives an image's archive.
func ArchiveName(im Image) string {
	return im.Target.Name + "-" + im.Ref.TagStr() + ".oci.tar"
}

// WriteArchives writes one OCI layout tar per image into dir (created if
// missing), named by ArchiveName, and returns their paths.
func (r *Result) WriteArchives(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create archive directory: %w", err)
	}
	var paths []string
	for _, im := range r.Images {
		p := filepath.Join(dir, ArchiveName(im))
		if err := writeArchiveFile(p, im.Ref, im.Index); err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}

func writeArchiveFile(path string, ref name.Reference, idx v1.ImageIndex) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create archive: %w", err)
	}
	if err := WriteArchive(f, ref, idx); err != nil {
		_ = f.Close() // the write error is the one to report
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close archive %s: %w", path, err)
	}
	return nil
}

// WriteArchive writes idx as a tar of an OCI image layout whose index.json
// names it ref: the input of `ctr -n k8s.io images import` (containerd
// 1.6 and later) and `skopeo copy oci-archive:`. Entries are in a fixed
// order with a fixed mtime, so the archive of one index is the same bytes
// every time.
func WriteArchive(w io.Writer, ref name.Reference, idx v1.ImageIndex) error {
	top := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: idx, Descriptor: v1.Descriptor{Annotations: refAnnotations(ref)}})
	indexJSON, err := top.RawManifest()
	if err != nil {
		return fmt.Errorf("archive %s: index.json: %w", ref, err)
	}
	blobs := map[v1.Hash]blob{}
	if err := collectIndex(idx, blobs); err != nil {
		return fmt.Errorf("archive %s: %w", ref, err)
	}
	digests := make([]v1.Hash, 0, len(blobs))
	for h := range blobs {
		digests = append(digests, h)
	}
	sort.Slice(digests, func(i, j int) bool { return digests[i].String() < digests[j].String() })

	tw := tar.NewWriter(w)
	mtime := time.Unix(0, 0)
	add := func(name string, size int64, body func(io.Writer) error) error {
		h := &tar.Header{Name: name, Mode: 0o644, Size: size, ModTime: mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if body == nil {
			h.Mode, h.Typeflag = 0o755, tar.TypeDir
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("archive %s: %s: %w", ref, name, err)
		}
		if body == nil {
			return nil
		}
		if err := body(tw); err != nil {
			return fmt.Errorf("archive %s: %s: %w", ref, name, err)
		}
		return nil
	}
	bytesBody := func(b []byte) func(io.Writer) error {
		return func(w io.Writer) error { _, err := w.Write(b); return err }
	}
	layoutFile := []byte(`{"imageLayoutVersion":"1.0.0"}`)
	if err := add("oci-layout", int64(len(layoutFile)), bytesBody(layoutFile)); err != nil {
		return err
	}
	if err := add("index.json", int64(len(indexJSON)), bytesBody(indexJSON)); err != nil {
		return err
	}
	if err := add("blobs/", 0, nil); err != nil {
		return err
	}
	if err := add("blobs/sha256/", 0, nil); err != nil {
		return err
	}
	for _, h := range digests {
		b := blobs[h]
		if err := add("blobs/"+h.Algorithm+"/"+h.Hex, b.size, b.copy); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("archive %s: %w", ref, err)
	}
	return nil
}

// blob is one blob of an archive: its size and how to write it.
type blob struct {
	size int64
	copy func(io.Writer) error
}

func rawBlob(b []byte) blob {
	return blob{size: int64(len(b)), copy: func(w io.Writer) error { _, err := w.Write(b); return err }}
}

// collectIndex adds idx's manifest and everything it references to blobs.
func collectIndex(idx v1.ImageIndex, blobs map[v1.Hash]blob) error {
	raw, err := idx.RawManifest()
	if err != nil {
		return fmt.Errorf("index manifest: %w", err)
	}
	d, err := idx.Digest()
	if err != nil {
		return fmt.Errorf("index digest: %w", err)
	}
	blobs[d] = rawBlob(raw)
	im, err := idx.IndexManifest()
	if err != nil {
		return fmt.Errorf("index manifest: %w", err)
	}
	for _, desc := range im.Manifests {
		if desc.MediaType.IsIndex() {
			child, err := idx.ImageIndex(desc.Digest)
			if err != nil {
				return fmt.Errorf("child index %s: %w", desc.Digest, err)
			}
			if err := collectIndex(child, blobs); err != nil {
				return err
			}
			continue
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			return fmt.Errorf("image %s: %w", desc.Digest, err)
		}
		if err := collectImage(img, desc.Digest, blobs); err != nil {
			return err
		}
	}
	return nil
}

// collectImage adds an image's manifest, config and layers to blobs.
func collectImage(img v1.Image, digest v1.Hash, blobs map[v1.Hash]blob) error {
	raw, err := img.RawManifest()
	if err != nil {
		return fmt.Errorf("image manifest %s: %w", digest, err)
	}
	blobs[digest] = rawBlob(raw)
	cfg, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("image config of %s: %w", digest, err)
	}
	cfgDigest, err := img.ConfigName()
	if err != nil {
		return fmt.Errorf("image config of %s: %w", digest, err)
	}
	blobs[cfgDigest] = rawBlob(cfg)
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("layers of %s: %w", digest, err)
	}
	for _, l := range layers {
		ld, err := l.Digest()
		if err != nil {
			return fmt.Errorf("layer of %s: %w", digest, err)
		}
		size, err := l.Size()
		if err != nil {
			return fmt.Errorf("layer %s: %w", ld, err)
		}
		blobs[ld] = blob{size: size, copy: func(w io.Writer) error {
			rc, err := l.Compressed()
			if err != nil {
				return err
			}
			defer rc.Close()
			n, err := io.Copy(w, rc)
			if err == nil && n != size {
				err = fmt.Errorf("layer %s: %d bytes, want %d", ld, n, size)
			}
			return err
		}}
	}
	return nil
}

// Push pushes every image's index to its reference, with credentials from
// the Docker config (~/.docker/config.json and credential helpers), as
// crane and ko do. Loopback and private-address registries are spoken to
// over plain HTTP, any other only over HTTPS unless Options.Insecure was
// set.
func (r *Result) Push(ctx context.Context) error {
	for _, im := range r.Images {
		if err := remote.WriteIndex(im.Ref, im.Index, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return fmt.Errorf("push %s: %w", im.Ref, err)
		}
	}
	return nil
}
