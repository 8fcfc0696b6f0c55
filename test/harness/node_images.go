package harness

// Images for the test cluster (StartCluster). Nothing can be pulled from
// the internet on the test machines, so every image a pod runs is made
// here from files of this machine: the pause image from test/images/pause,
// workload images from Debian's busybox-static plus any host binary with
// the shared libraries it needs.

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
)

const hintBusybox = "run test/all.sh once, or: apt-get install -y busybox-static"

// PauseImageRef is the sandbox image of the cluster's containerd,
// imported (never pulled) when the cluster starts.
const PauseImageRef = "selfhost.test/pause:1"

// busyboxApplets get a /bin symlink in BusyboxImage, so that pod commands
// can say "sleep" or "sh" instead of "busybox sleep".
var busyboxApplets = []string{"sh", "sleep", "httpd", "nslookup", "wget", "cat", "echo", "ls", "true", "mkdir", "env", "id", "hostname", "grep", "ps", "kill"}

// BusyboxBin is Debian's static busybox (package busybox-static; env
// BUSYBOX).
func BusyboxBin(t testing.TB) string { return Binary(t, "busybox", "BUSYBOX", hintBusybox) }

// BusyboxImage returns an OCI image of Debian's static busybox at
// /bin/busybox with applet links in /bin (sh, sleep, httpd, nslookup,
// wget, ...), PATH=/bin and the command sh. extra host binaries (such as
// /usr/bin/docker-registry) are added at their host paths together with
// the shared libraries ldd lists for them.
func BusyboxImage(t testing.TB, extra ...string) v1.Image {
	t.Helper()
	files := map[string]string{"/bin/busybox": BusyboxBin(t)}
	for _, bin := range extra {
		files[bin] = bin
		libs, err := sharedLibraries(bin)
		if err != nil {
			t.Fatalf("busybox image: %v", err)
		}
		for _, l := range libs {
			files[l] = l
		}
	}
	links := map[string]string{}
	for _, a := range busyboxApplets {
		links["/bin/"+a] = "busybox"
	}
	layer, err := filesLayer(files, links, []string{"/tmp", "/etc", "/www"})
	if err != nil {
		t.Fatalf("busybox image: %v", err)
	}
	img, err := imageOf(layer, nil, []string{"sh"})
	if err != nil {
		t.Fatalf("busybox image: %v", err)
	}
	return img
}

// pauseImage wraps the static pause binary into an image.
func pauseImage(t testing.TB) v1.Image {
	t.Helper()
	bin := goBinary(t, "HARNESS_PAUSE_BIN", "./test/images/pause")
	layer, err := filesLayer(map[string]string{"/pause": bin}, nil, nil)
	if err != nil {
		t.Fatalf("pause image: %v", err)
	}
	img, err := imageOf(layer, []string{"/pause"}, nil)
	if err != nil {
		t.Fatalf("pause image: %v", err)
	}
	return img
}

// imageOf is an OCI image for the host platform with one layer.
func imageOf(layer v1.Layer, entrypoint, cmd []string) (v1.Image, error) {
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = HostPlatform.OS, HostPlatform.Architecture
	cfg.Config.Entrypoint, cfg.Config.Cmd = entrypoint, cmd
	cfg.Config.Env = []string{"PATH=/bin:/usr/bin:/sbin:/usr/sbin"}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return nil, fmt.Errorf("set config: %w", err)
	}
	if img, err = mutate.AppendLayers(img, layer); err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	return img, nil
}

// filesLayer is a gzip layer of host files (image path → host path),
// symlinks (path → target) and empty directories.
func filesLayer(files, links map[string]string, dirs []string) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	seen := map[string]bool{}
	mkdirs := func(p string) error {
		var parents []string
		for d := filepath.Dir(p); d != "/" && !seen[d]; d = filepath.Dir(d) {
			parents = append(parents, d)
			seen[d] = true
		}
		for i := len(parents) - 1; i >= 0; i-- {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(parents[i], "/") + "/", Mode: 0o755}); err != nil {
				return err
			}
		}
		return nil
	}
	for _, d := range dirs {
		if err := mkdirs(d + "/x"); err != nil {
			return nil, err
		}
	}
	for _, p := range sortedKeys(files) {
		if err := mkdirs(p); err != nil {
			return nil, err
		}
		b, err := os.ReadFile(files[p])
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", files[p], err)
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(p, "/"), Mode: 0o755, Size: int64(len(b))}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(b); err != nil {
			return nil, err
		}
	}
	for _, p := range sortedKeys(links) {
		if err := mkdirs(p); err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: strings.TrimPrefix(p, "/"), Linkname: links[p], Mode: 0o777}); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer))
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// lddPath matches the absolute library paths in ldd's output
// ("libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and the
// interpreter line "/lib64/ld-linux-x86-64.so.2 (0x...)").
var lddPath = regexp.MustCompile(`(?m)(?:=> |^\s*)(/[^\s]+) \(0x`)

// sharedLibraries lists the libraries a dynamic executable loads; none
// for a static one.
func sharedLibraries(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "not a dynamic executable") {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %w: %s", bin, err, out)
	}
	var libs []string
	for _, m := range lddPath.FindAllStringSubmatch(string(out), -1) {
		libs = append(libs, m[1])
	}
	return libs, nil
}

// ImportImage puts img into the node's containerd under ref (in the CRI's
// namespace k8s.io, unpacked), as if kubelet had pulled it: pods with
// imagePullPolicy IfNotPresent or Never then run it without any registry.
func (c *Cluster) ImportImage(t testing.TB, ref string, img v1.Image) {
	t.Helper()
	if err := c.importImage(ref, img); err != nil {
		t.Fatalf("cluster: %v", err)
	}
	c.waitCRIImage(t, ref)
}

// waitCRIImage waits until the CRI knows an image that ctr imported: its
// image store follows containerd's events, a moment later, and kubelet
// asks the CRI.
func (c *Cluster) waitCRIImage(t testing.TB, ref string) {
	t.Helper()
	testkit.WaitFor(t, "cluster: the CRI listing the imported "+ref, 30*time.Second, func() error {
		_, err := c.Containerd.Crictl(t, "inspecti", ref)
		return err
	})
}

func (c *Cluster) importImage(ref string, img v1.Image) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("import %s: %w", ref, err)
	}
	f, err := os.CreateTemp(c.Dir, "import-*.tar")
	if err != nil {
		return fmt.Errorf("import %s: %w", ref, err)
	}
	defer os.Remove(f.Name())
	if err := tarball.Write(tag, img, f); err != nil {
		_ = f.Close() // the write error is the one to report; the file is removed
		return fmt.Errorf("import %s: write archive: %w", ref, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("import %s: %w", ref, err)
	}
	_, err = run(c.ctr, "--address", c.Containerd.Socket, "--namespace", "k8s.io", "images", "import",
		"--snapshotter", c.snapshotter, f.Name())
	if err != nil {
		return fmt.Errorf("import %s: %w", ref, err)
	}
	return nil
}

// PushImage pushes img to the cluster's registry as repo:tag and returns
// the reference a pod uses (127.0.0.1:5000/repo:tag: containerd speaks
// plain HTTP to loopback only).
func (c *Cluster) PushImage(t testing.TB, repo, tag string, img v1.Image) string {
	t.Helper()
	im := pushImage(t, c.RegistryAddr, repo, tag, img)
	return im.Ref(c.RegistryNodeAddr, "")
}

// ImportIndex puts a multi-platform index into the node's containerd
// under ref (CRI namespace k8s.io; the host platform's image unpacked),
// through an OCI layout archive whose index entry is annotated with the
// name containerd gives the image.
func (c *Cluster) ImportIndex(t testing.TB, ref string, idx v1.ImageIndex) {
	t.Helper()
	if err := c.importIndex(ref, idx); err != nil {
		t.Fatalf("cluster: %v", err)
	}
	c.waitCRIImage(t, ref)
}

func (c *Cluster) importIndex(ref string, idx v1.ImageIndex) error {
	dir, err := os.MkdirTemp(c.Dir, "import-layout-")
	if err != nil {
		return fmt.Errorf("import %s: %w", ref, err)
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("import %s: write layout: %w", ref, err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{"io.containerd.image.name": ref})); err != nil {
		return fmt.Errorf("import %s: write layout: %w", ref, err)
	}
	archive := dir + ".tar"
	defer os.Remove(archive)
	if err := tarDir(dir, archive); err != nil {
		return fmt.Errorf("import %s: %w", ref, err)
	}
	_, err = run(c.ctr, "--address", c.Containerd.Socket, "--namespace", "k8s.io", "images", "import",
		"--snapshotter", c.snapshotter, archive)
	if err != nil {
		return fmt.Errorf("import %s: %w", ref, err)
	}
	return nil
}

// tarDir writes the regular files and directories under dir to a tar file.
func tarDir(dir, dst string) error {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		if e.IsDir() {
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: 0o755})
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: 0o644, Size: int64(len(b))}); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if cerr := tw.Close(); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("tar %s: %w", dir, err)
	}
	return nil
}
