package imagebuild

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Result is what one Build made.
type Result struct {
	// Version is the tag; Revision and Created are the commit and time the
	// images carry.
	Version, Revision string
	Created           time.Time
	// Images are in the order of Options.Targets.
	Images []Image
}

// Image is one target's multi-platform image.
type Image struct {
	Target Target
	// Ref is <prefix>/<target>:<version>.
	Ref name.Tag
	// Index is the OCI image index over Platforms.
	Index v1.ImageIndex
	// Platforms are in the order of Options.Platforms.
	Platforms []PlatformImage
}

// PlatformImage is one platform's image of a target.
type PlatformImage struct {
	Platform v1.Platform
	Image    v1.Image
	// Digest is the manifest digest; Size the sum of the manifest, config
	// and layer sizes: what a node downloads (compressed) to pull it.
	Digest v1.Hash
	Size   int64
}

// Build compiles every target for every platform and makes the images in
// memory; write or push them with the Result's methods.
func Build(ctx context.Context, opts Options) (*Result, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	m, err := o.meta(ctx)
	if err != nil {
		return nil, err
	}
	caCerts, err := os.ReadFile(o.CACertFile)
	if err != nil {
		return nil, fmt.Errorf("read the CA bundle to copy into the images (install ca-certificates or set the CA file): %w", err)
	}
	if len(caCerts) == 0 {
		return nil, fmt.Errorf("read the CA bundle %s: file is empty", o.CACertFile)
	}
	tmp, err := os.MkdirTemp("", "build-images-")
	if err != nil {
		return nil, fmt.Errorf("create build directory: %w", err)
	}
	defer os.RemoveAll(tmp)

	res := &Result{Version: m.Version, Revision: m.Revision, Created: m.Created}
	for _, t := range o.Targets {
		ref, err := name.NewTag(o.Prefix+"/"+t.Name+":"+m.Version, o.nameOptions()...)
		if err != nil {
			return nil, fmt.Errorf("image reference of %s: %w", t.Name, err)
		}
		im := Image{Target: t, Ref: ref}
		var imgs []v1.Image
		for _, p := range o.Platforms {
			start := time.Now()
			bin, err := goBuild(ctx, o.Go, o.RepoRoot, tmp, t, p, m.Version)
			if err != nil {
				return nil, err
			}
			binary, err := os.ReadFile(bin)
			if err != nil {
				return nil, fmt.Errorf("read binary of %s: %w", t.Name, err)
			}
			img, err := platformImage(t, p, m, binary, caCerts)
			if err != nil {
				return nil, err
			}
			pi, err := describe(p, img)
			if err != nil {
				return nil, fmt.Errorf("describe %s for %s: %w", t.Name, platformString(p), err)
			}
			o.Log.Info("image built", "image", t.Name, "platform", platformString(p), "digest", pi.Digest.String(),
				"size", pi.Size, "binary_size", len(binary), "took", time.Since(start).Round(time.Millisecond))
			im.Platforms = append(im.Platforms, pi)
			imgs = append(imgs, img)
		}
		im.Index = imageIndex(t, m, o.Platforms, imgs)
		res.Images = append(res.Images, im)
	}
	return res, nil
}

// describe computes an image's digest and its compressed size.
func describe(p v1.Platform, img v1.Image) (PlatformImage, error) {
	pi := PlatformImage{Platform: p, Image: img}
	var err error
	if pi.Digest, err = img.Digest(); err != nil {
		return pi, err
	}
	mf, err := img.Manifest()
	if err != nil {
		return pi, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return pi, err
	}
	pi.Size = int64(len(raw)) + mf.Config.Size
	for _, l := range mf.Layers {
		pi.Size += l.Size
	}
	return pi, nil
}

// withDefaults fills the zero fields of o.
func (o Options) withDefaults() (Options, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.RepoRoot == "" {
		wd, err := os.Getwd()
		if err != nil {
			return o, fmt.Errorf("find repository root: %w", err)
		}
		if o.RepoRoot, err = FindRepoRoot(wd); err != nil {
			return o, err
		}
	}
	if len(o.Targets) == 0 {
		o.Targets = DefaultTargets()
	}
	if len(o.Platforms) == 0 {
		o.Platforms = DefaultPlatforms()
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.CACertFile == "" {
		o.CACertFile = DefaultCACertFile
	}
	if o.Go == "" {
		o.Go = "go"
	}
	return o, nil
}

func (o Options) nameOptions() []name.Option {
	opts := []name.Option{name.StrictValidation}
	if o.Insecure {
		opts = append(opts, name.Insecure)
	}
	return opts
}

// meta resolves the version, source, revision and created time: the
// options, else the chart and git.
func (o Options) meta(ctx context.Context) (meta, error) {
	m := meta{Version: o.Version, Source: o.Source, Revision: o.Revision, Created: o.Created.UTC()}
	if m.Version == "" || m.Source == "" {
		chart, err := readChart(o.RepoRoot)
		if err != nil {
			return m, err
		}
		if m.Version == "" {
			m.Version = chart.AppVersion
		}
		if m.Source == "" {
			m.Source = chart.Home
		}
	}
	if m.Revision == "" || o.Created.IsZero() {
		g, err := readGit(ctx, o.RepoRoot)
		if err != nil {
			return m, fmt.Errorf("read the commit for the revision and created time (or set both): %w", err)
		}
		if g.Dirty {
			o.Log.Warn("the working tree has uncommitted changes: the images are built from them, not from the revision they are labelled with", "revision", g.Revision)
		}
		if m.Revision == "" {
			m.Revision = g.Revision
		}
		if o.Created.IsZero() {
			m.Created = g.Time
		}
	}
	if _, err := name.NewTag("example.invalid/x:"+m.Version, name.StrictValidation); err != nil {
		return m, fmt.Errorf("version %q is not a valid image tag: %w", m.Version, err)
	}
	return m, nil
}

// Lookup returns the image of the target named name.
func (r *Result) Lookup(name string) (Image, bool) {
	for _, im := range r.Images {
		if im.Target.Name == name {
			return im, true
		}
	}
	return Image{}, false
}

// Retag returns a copy of r whose images are named
// <prefix>/<target>:<version>, e.g. to push one build to a test
// registry. The images themselves, and so their digests, are unchanged.
// insecure allows plain HTTP to a registry outside loopback and private
// addresses.
func (r *Result) Retag(prefix string, insecure bool) (*Result, error) {
	nameOpts := Options{Insecure: insecure}.nameOptions()
	out := *r
	out.Images = make([]Image, len(r.Images))
	for i, im := range r.Images {
		ref, err := name.NewTag(prefix+"/"+im.Target.Name+":"+r.Version, nameOpts...)
		if err != nil {
			return nil, fmt.Errorf("retag %s: %w", im.Target.Name, err)
		}
		im.Ref = ref
		out.Images[i] = im
	}
	return &out, nil
}
