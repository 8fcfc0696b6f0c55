package imagebuild_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/imagebuild"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// testPush pushes both indexes to a real docker-registry and reads them
// back with crane and skopeo: same index digest and bytes, every blob.
func testPush(t *testing.T, built *imagebuild.Result) {
	reg := harness.StartDockerRegistry(t)
	r, err := built.Retag(reg.Addr+"/k8s-selfhost-repo", false)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Push(t.Context()); err != nil {
		t.Fatalf("push: %v", err)
	}
	for _, im := range r.Images {
		ref := im.Ref.Name()
		want, err := im.Index.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if got := harness.CraneDigest(t, ref); got != want.String() {
			t.Errorf("crane digest %s = %s, want %s", ref, got, want)
		}
		raw, err := im.Index.RawManifest()
		if err != nil {
			t.Fatal(err)
		}
		if got := harness.SkopeoInspectRaw(t, ref); !bytes.Equal(got, raw) {
			t.Errorf("skopeo inspect --raw %s differs from the built index:\n%s\n%s", ref, got, raw)
		}
		pulled := harness.CranePullOCI(t, ref)
		for _, p := range im.Platforms {
			if _, ok := pulled[p.Digest.String()]; !ok {
				t.Errorf("crane pull %s: no manifest %s of %s", ref, p.Digest, p.Platform.Architecture)
			}
			m, err := p.Image.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range append(m.Layers, m.Config) {
				if size, ok := pulled[d.Digest.String()]; !ok || size != d.Size {
					t.Errorf("crane pull %s: blob %s has size %d (present %v), want %d", ref, d.Digest, size, ok, d.Size)
				}
			}
		}
	}
}

// testContainerdImport imports the archive of the image named target into
// a real containerd in the CRI's namespace with `ctr -n k8s.io images
// import`, as an offline node would, and checks that the CRI (what kubelet
// asks) sees it.
func testContainerdImport(t *testing.T, r *imagebuild.Result, target string) {
	edge, ok := r.Lookup(target)
	if !ok {
		t.Fatalf("no %s image", target)
	}
	archive := filepath.Join(t.TempDir(), imagebuild.ArchiveName(edge))
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	if err := imagebuild.WriteArchive(f, edge.Ref, edge.Index); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	c := harness.StartContainerd(t)
	ctr := harness.Binary(t, "ctr", "CTR", "apt-get install -y containerd")
	out, err := exec.CommandContext(t.Context(), ctr, "--address", c.Socket, "-n", "k8s.io",
		"images", "import", "--snapshotter", "native", archive).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr images import: %v\n%s", err, out)
	}
	ls, err := exec.CommandContext(t.Context(), ctr, "--address", c.Socket, "-n", "k8s.io", "images", "ls").CombinedOutput()
	if err != nil {
		t.Fatalf("ctr images ls: %v\n%s", err, ls)
	}
	want, err := edge.Index.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ls), edge.Ref.Name()+" ") || !strings.Contains(string(ls), want.String()) {
		t.Errorf("ctr images ls lacks %s at %s:\n%s", edge.Ref.Name(), want, ls)
	}
	// The CRI resolves the index to this machine's platform (amd64).
	var amd64Config string
	for _, p := range edge.Platforms {
		if p.Platform.Architecture == "amd64" {
			h, err := p.Image.ConfigName()
			if err != nil {
				t.Fatal(err)
			}
			amd64Config = h.String()
		}
	}
	img := c.CrictlInspect(t, edge.Ref.Name())
	if img.ID != amd64Config {
		b, _ := json.Marshal(img)
		t.Errorf("crictl inspecti %s: id %s, want the amd64 config %s (%s)", edge.Ref.Name(), img.ID, amd64Config, b)
	}
}
