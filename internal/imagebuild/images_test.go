package imagebuild_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/imagebuild"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
)

// TestImages builds the real images of HEAD twice (both targets, both
// platforms: the first run on a cold Go cache cross-compiles for minutes,
// later runs only link) and checks them: same digests from one commit, the config,
// the layer's files, the edge binary running, and (images_publish_test.go)
// a push to docker-registry read back by crane and skopeo and an import
// into containerd.
func TestImages(t *testing.T) {
	testkit.Integration(t) // minutes of cross-compiling, docker-registry, containerd
	ctx := t.Context()
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	src := exportHead(t, ctx)
	opts := imagebuild.Options{RepoRoot: src.dir, Revision: src.rev, Created: src.created, Log: log}
	start := time.Now()
	first, err := imagebuild.Build(ctx, opts)
	if err != nil {
		t.Fatalf("first build: %v", err)
	}
	t.Logf("first build took %s", time.Since(start))
	start = time.Now()
	second, err := imagebuild.Build(ctx, opts)
	if err != nil {
		t.Fatalf("second build: %v", err)
	}
	t.Logf("second build took %s", time.Since(start))
	var table bytes.Buffer
	if err := first.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("images:\n%s", table.String())

	t.Run("reproducible", func(t *testing.T) { testReproducible(t, first, second) })
	t.Run("config", func(t *testing.T) { testConfig(t, src, first) })
	t.Run("layer", func(t *testing.T) { testLayer(t, ctx, first) })
	t.Run("push", func(t *testing.T) { testPush(t, first) })
	t.Run("containerd import", func(t *testing.T) { testContainerdImport(t, first, "edge") })
}

// source is the commit the test builds.
type source struct {
	dir, rev string
	created  time.Time
}

// exportHead writes the tree of HEAD (git archive) into a new directory,
// so that the two builds see one commit even while the working tree
// changes, and returns it with HEAD's commit and committer time: the
// revision and created time the command would take from git.
func exportHead(t *testing.T, ctx context.Context) source {
	t.Helper()
	// git archive takes only the working directory's subtree: run git at
	// the repository root.
	root, err := imagebuild.FindRepoRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, "git", "-C", root, "log", "-1", "--format=%H %cI", "HEAD").Output()
	if err != nil {
		t.Fatalf("git log: %v", err)
	}
	rev, ts, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	created, err := time.Parse(time.RFC3339, ts)
	if err != nil {
		t.Fatalf("commit time %q: %v", ts, err)
	}
	dir := t.TempDir()
	archive := exec.CommandContext(ctx, "git", "-C", root, "archive", "--format=tar", rev)
	extract := exec.CommandContext(ctx, "tar", "-x", "-C", dir)
	if extract.Stdin, err = archive.StdoutPipe(); err != nil {
		t.Fatal(err)
	}
	if err := extract.Start(); err != nil {
		t.Fatalf("tar: %v", err)
	}
	if err := archive.Run(); err != nil {
		t.Fatalf("git archive %s: %v", rev, err)
	}
	if err := extract.Wait(); err != nil {
		t.Fatalf("tar -x: %v", err)
	}
	return source{dir: dir, rev: rev, created: created.UTC()}
}

// testWriter sends the build's log lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// testReproducible compares the two builds' index digests, their OCI
// layouts' index.json and their archives byte for byte.
func testReproducible(t *testing.T, a, b *imagebuild.Result) {
	if len(a.Images) != 3 || len(b.Images) != 3 {
		t.Fatalf("builds have %d and %d images, want 3 (controlplane, edge, forwarder)", len(a.Images), len(b.Images))
	}
	for i := range a.Images {
		da, err := a.Images[i].Index.Digest()
		if err != nil {
			t.Fatal(err)
		}
		db, err := b.Images[i].Index.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if da != db {
			t.Errorf("%s: index digests differ between two builds: %s and %s", a.Images[i].Ref, da, db)
		}
		if n := len(a.Images[i].Platforms); n != 2 {
			t.Errorf("%s: %d platforms, want 2", a.Images[i].Ref, n)
		}
	}
	dirA, dirB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	for _, w := range []struct {
		r   *imagebuild.Result
		dir string
	}{{a, dirA}, {b, dirB}} {
		if err := w.r.WriteLayout(w.dir); err != nil {
			t.Fatal(err)
		}
		// Writing again over the same layout replaces it.
		if err := w.r.WriteLayout(w.dir); err != nil {
			t.Fatalf("rewrite layout: %v", err)
		}
	}
	ia, ib := readFile(t, filepath.Join(dirA, "index.json")), readFile(t, filepath.Join(dirB, "index.json"))
	if !bytes.Equal(ia, ib) {
		t.Errorf("index.json differs:\n%s\n%s", ia, ib)
	}
	p, err := layout.FromPath(dirA)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != len(a.Images) {
		t.Fatalf("layout index.json lists %d manifests, want one per image (%d)", len(im.Manifests), len(a.Images))
	}
	for i, d := range im.Manifests {
		want := a.Images[i].Ref.Name()
		if got := d.Annotations[imagebuild.AnnotationRefName]; got != want {
			t.Errorf("layout manifest %d: ref.name %q, want %q", i, got, want)
		}
		if want := "ghcr.io/k8s-selfhost-repo/" + a.Images[i].Target.Name + ":" + a.Version; want != a.Images[i].Ref.Name() {
			t.Errorf("default reference %s, want %s (the chart's default repositories)", a.Images[i].Ref.Name(), want)
		}
	}
	archA, err := a.WriteArchives(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	archB, err := b.WriteArchives(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for i := range archA {
		if !bytes.Equal(readFile(t, archA[i]), readFile(t, archB[i])) {
			t.Errorf("archives %s and %s differ", archA[i], archB[i])
		}
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testConfig checks every platform image's config and annotations.
func testConfig(t *testing.T, src source, r *imagebuild.Result) {
	chartVersion := chartAppVersion(t, src.dir)
	if r.Version != chartVersion {
		t.Errorf("version %q, want the chart's appVersion %q", r.Version, chartVersion)
	}
	rev, commitTime := src.rev, src.created
	if r.Revision != rev || !r.Created.Equal(commitTime) {
		t.Errorf("revision %s created %v, want HEAD %s at %v", r.Revision, r.Created, rev, commitTime)
	}
	for _, im := range r.Images {
		wantLabels := map[string]string{
			imagebuild.AnnotationSource:   "https://github.com/k8s-selfhost-repo/k8s-selfhost-repo",
			imagebuild.AnnotationRevision: rev,
			imagebuild.AnnotationVersion:  chartVersion,
			imagebuild.AnnotationTitle:    im.Target.Name,
			imagebuild.AnnotationCreated:  commitTime.UTC().Format(time.RFC3339),
		}
		idxManifest, err := im.Index.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		checkLabels(t, im.Ref.Name()+" index annotations", idxManifest.Annotations, wantLabels)
		for i, p := range im.Platforms {
			what := im.Ref.Name() + " " + p.Platform.OS + "/" + p.Platform.Architecture
			if got := idxManifest.Manifests[i].Platform; got == nil || got.Architecture != p.Platform.Architecture || got.OS != "linux" {
				t.Errorf("%s: index platform %v", what, got)
			}
			cfg, err := p.Image.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			c := cfg.Config
			if c.User != "65532:65532" || c.WorkingDir != "/home/nonroot" ||
				len(c.Entrypoint) != 1 || c.Entrypoint[0] != "/usr/local/bin/"+im.Target.Name || len(c.Cmd) != 0 {
				t.Errorf("%s: user %q workdir %q entrypoint %q cmd %q", what, c.User, c.WorkingDir, c.Entrypoint, c.Cmd)
			}
			if cfg.Architecture != p.Platform.Architecture || cfg.OS != "linux" || !cfg.Created.Equal(commitTime) {
				t.Errorf("%s: config %s/%s created %v", what, cfg.OS, cfg.Architecture, cfg.Created)
			}
			checkLabels(t, what+" labels", c.Labels, wantLabels)
			m, err := p.Image.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			checkLabels(t, what+" manifest annotations", m.Annotations, wantLabels)
			if len(m.Layers) != 1 || m.MediaType != "application/vnd.oci.image.manifest.v1+json" {
				t.Errorf("%s: %d layers, media type %s; want one layer, OCI", what, len(m.Layers), m.MediaType)
			}
		}
	}
}

func checkLabels(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s = %q, want %q", what, k, got[k], v)
		}
	}
}

func chartAppVersion(t *testing.T, repoRoot string) string {
	t.Helper()
	b := readFile(t, filepath.Join(repoRoot, "charts/k8s-selfhost-repo/Chart.yaml"))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "appVersion:"); ok {
			return strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	t.Fatal("Chart.yaml has no appVersion")
	return ""
}

// testLayer reads each image's layer: the static binary, the host's CA
// bundle, the nonroot user; and runs the amd64 edge binary.
func testLayer(t *testing.T, ctx context.Context, r *imagebuild.Result) {
	hostCA := readFile(t, imagebuild.DefaultCACertFile)
	for _, im := range r.Images {
		for _, p := range im.Platforms {
			what := im.Ref.Name() + " " + p.Platform.Architecture
			files := layerFiles(t, p.Image)
			binPath := "usr/local/bin/" + im.Target.Name
			bin, ok := files[binPath]
			if !ok {
				t.Fatalf("%s: no %s in the layer (has %v)", what, binPath, keys(files))
			}
			if bin.mode != 0o755 || bin.uid != 0 {
				t.Errorf("%s: %s mode %o uid %d", what, binPath, bin.mode, bin.uid)
			}
			local := filepath.Join(t.TempDir(), im.Target.Name)
			if err := os.WriteFile(local, bin.body, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := imagebuild.CheckStaticELF(local, p.Platform.Architecture); err != nil {
				t.Errorf("%s: %v", what, err)
			}
			if ca := files["etc/ssl/certs/ca-certificates.crt"]; !bytes.Equal(ca.body, hostCA) {
				t.Errorf("%s: CA bundle (%d bytes) is not the host's (%d bytes)", what, len(ca.body), len(hostCA))
			}
			if !strings.Contains(string(files["etc/passwd"].body), "nonroot:x:65532:65532:") ||
				!strings.Contains(string(files["etc/group"].body), "nonroot:x:65532:") {
				t.Errorf("%s: passwd/group lack nonroot 65532:\n%s%s", what, files["etc/passwd"].body, files["etc/group"].body)
			}
			if h := files["home/nonroot/"]; h.uid != 65532 || h.gid != 65532 {
				t.Errorf("%s: /home/nonroot owned by %d:%d", what, h.uid, h.gid)
			}
			if im.Target.Name == "edge" && p.Platform.Architecture == "amd64" {
				runHelp(t, ctx, local)
			}
		}
	}
}

// runHelp proves the extracted binary runs: --help exits 0 and lists
// flags.
func runHelp(t *testing.T, ctx context.Context, bin string) {
	t.Helper()
	out, err := exec.CommandContext(ctx, bin, "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "-listen") {
		t.Errorf("%s --help: %v\n%s", bin, err, out)
	}
}

// tarFile is one entry of a layer.
type tarFile struct {
	mode     int64
	uid, gid int
	body     []byte
}

func layerFiles(t *testing.T, img v1.Image) map[string]tarFile {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]tarFile{}
	tr := tar.NewReader(rc)
	prev := ""
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatalf("read layer: %v", err)
		}
		if h.Name <= prev {
			t.Errorf("layer entries not sorted: %s after %s", h.Name, prev)
		}
		prev = h.Name
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = tarFile{mode: h.Mode, uid: h.Uid, gid: h.Gid, body: body}
	}
}

func keys(m map[string]tarFile) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
