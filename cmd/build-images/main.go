// Command build-images builds the control plane, edge and forwarder container images
// from this repository with no Docker daemon and no base image, and writes
// them as an OCI layout, as OCI layout tar archives, or pushes them
// (docs/images.md):
//
//	go run ./cmd/build-images --out bin/images --archives bin/images
//	go run ./cmd/build-images --push 127.0.0.1:5000/k8s-selfhost-repo
//	go run ./cmd/build-images --chart-push oci://127.0.0.1:5000/charts
//
// It prints, per image and platform, the digest and the compressed size,
// and the chart's reference, version and digest when it pushed the chart.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/chartpush"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/imagebuild"
)

// flags are the command line.
type flags struct {
	out, archives, push, chartPush string
	opts                           imagebuild.Options
}

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("build-images", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.out, "out", "", "write an OCI image layout of every image to this `directory` (index.json names each by its full reference)")
	fs.StringVar(&f.archives, "archives", "", "write one OCI layout tar per image, <name>-<version>.oci.tar, into this `directory` (for ctr -n k8s.io images import)")
	fs.StringVar(&f.push, "push", "", "push <prefix>/controlplane:<version>, <prefix>/edge:<version> and <prefix>/forwarder:<version> under this repository `prefix` (e.g. 127.0.0.1:5000/k8s-selfhost-repo)")
	fs.StringVar(&f.chartPush, "chart-push", "", "push the Helm chart as an OCI artifact to `oci://REGISTRY/PATH`/k8s-selfhost-repo:<chart version>; alone (without --out, --archives, --push) it builds no image")
	fs.StringVar(&f.opts.Prefix, "prefix", imagebuild.DefaultPrefix, "repository `prefix` of the image references when not pushing (the chart's default)")
	platforms := fs.String("platforms", "linux/amd64,linux/arm64", "comma-separated `platforms` (linux/amd64, linux/arm64)")
	fs.StringVar(&f.opts.Version, "version", "", "image tag and the binaries' version (default: appVersion of charts/k8s-selfhost-repo/Chart.yaml)")
	fs.StringVar(&f.opts.Revision, "revision", "", "org.opencontainers.image.revision (default: git rev-parse HEAD)")
	fs.StringVar(&f.opts.Source, "source", "", "org.opencontainers.image.source (default: the chart's home)")
	fs.StringVar(&f.opts.CACertFile, "ca-file", imagebuild.DefaultCACertFile, "CA bundle copied into the images at "+imagebuild.CACertPath)
	fs.BoolVar(&f.opts.Insecure, "insecure", false, "push images and chart over plain HTTP to a registry that is not on loopback or a private address")
	fs.StringVar(&f.opts.RepoRoot, "repo", "", "repository root (default: found from the working directory)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: build-images [flags]\n\nBuilds the controlplane, edge and forwarder images (static binaries, one layer, user 65532) without Docker,\n"+
			"and with --chart-push pushes the Helm chart as an OCI artifact (docs/images.md).\n"+
			"The created time is SOURCE_DATE_EPOCH if set, else the commit time of HEAD.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if fs.NArg() != 0 {
		return f, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if f.opts.Platforms, err = imagebuild.ParsePlatforms(*platforms); err != nil {
		return f, err
	}
	if f.push != "" {
		f.opts.Prefix = f.push
	}
	if f.chartPush != "" { // fail on a typo now, not after the image build
		if _, err := chartpush.Target(f.chartPush, "k8s-selfhost-repo", f.opts.Insecure); err != nil {
			return f, err
		}
	}
	if s := getenv("SOURCE_DATE_EPOCH"); s != "" {
		if f.opts.Created, err = imagebuild.ParseSourceDateEpoch(s); err != nil {
			return f, err
		}
	}
	return f, nil
}

func main() {
	f, err := parseFlags(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err != nil {
		log.Error("bad flags", "err", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	f.opts.Log = log
	if err := run(ctx, f, log); err != nil {
		log.Error("build-images failed", "err", err)
		os.Exit(1)
	}
}

// chartOnly reports whether the chart is the only output asked for: then
// no image is built (minutes of compiling for nothing).
func (f flags) chartOnly() bool {
	return f.chartPush != "" && f.out == "" && f.archives == "" && f.push == ""
}

func run(ctx context.Context, f flags, log *slog.Logger) error {
	if f.chartOnly() {
		return pushChart(ctx, f, time.Time{}, log)
	}
	res, err := imagebuild.Build(ctx, f.opts)
	if err != nil {
		return err
	}
	if f.out != "" {
		if err := res.WriteLayout(f.out); err != nil {
			return err
		}
		log.Info("OCI layout written", "dir", f.out)
	}
	if f.archives != "" {
		paths, err := res.WriteArchives(f.archives)
		if err != nil {
			return err
		}
		log.Info("archives written", "files", paths)
	}
	if f.push != "" {
		if err := res.Push(ctx); err != nil {
			return err
		}
		log.Info("pushed", "prefix", f.push)
	}
	if err := res.WriteTable(os.Stdout); err != nil {
		return err
	}
	if f.chartPush != "" {
		return pushChart(ctx, f, res.Created, log)
	}
	return nil
}

// pushChart packages charts/k8s-selfhost-repo and pushes it to
// f.chartPush, stamped with created (zero: SOURCE_DATE_EPOCH, else HEAD's
// commit time, as the images), and prints its reference, version and digest.
func pushChart(ctx context.Context, f flags, created time.Time, log *slog.Logger) error {
	root := f.opts.RepoRoot
	if root == "" {
		wd, err := os.Getwd()
		if err != nil {
			return fmt.Errorf("push chart: %w", err)
		}
		if root, err = imagebuild.FindRepoRoot(wd); err != nil {
			return fmt.Errorf("push chart: %w", err)
		}
	}
	if created.IsZero() {
		created = f.opts.Created
	}
	if created.IsZero() {
		var err error
		if created, err = chartpush.CommitTime(ctx, root); err != nil {
			return fmt.Errorf("push chart: %w", err)
		}
	}
	c, err := chartpush.Package(filepath.Join(root, chartpush.ChartDir), created)
	if err != nil {
		return err
	}
	repo, err := chartpush.Target(f.chartPush, c.Name, f.opts.Insecure)
	if err != nil {
		return err
	}
	p, err := chartpush.Push(ctx, c, repo, created)
	if err != nil {
		return err
	}
	log.Info("chart pushed", "chart", p.Repository, "version", p.Version, "digest", p.Digest.String())
	_, err = fmt.Fprintf(os.Stdout, "CHART\tVERSION\tDIGEST\n%s\t%s\t%s\n", p.Repository, p.Version, p.Digest)
	return err
}
