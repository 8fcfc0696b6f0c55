package harness

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Skopeo runs skopeo with args and returns its stdout. --insecure-policy
// keeps the run independent of the machine's /etc/containers/policy.json.
func Skopeo(t testing.TB, args ...string) ([]byte, error) {
	t.Helper()
	return run(skopeoBin(t), append([]string{"--insecure-policy"}, args...)...)
}

// SkopeoCopyDir copies docker://ref into a new dir: directory, which keeps
// the manifest byte for byte (oci: would convert a Docker schema2 manifest).
// all copies every image of an index (--all). It fails the test on error.
func SkopeoCopyDir(t testing.TB, ref string, all bool) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "dir")
	args := []string{"copy", "--src-tls-verify=false", "--preserve-digests"}
	if all {
		args = append(args, "--all")
	}
	if _, err := Skopeo(t, append(args, "docker://"+ref, "dir:"+dir)...); err != nil {
		t.Fatalf("skopeo copy %s: %v", ref, err)
	}
	return dir
}

// SkopeoCopyOCI copies docker://ref into a new OCI layout and returns its
// directory (read it with LayoutBlobs). skopeo converts a Docker schema2
// manifest for this transport, so compare manifests with SkopeoCopyDir.
func SkopeoCopyOCI(t testing.TB, ref string, all bool) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "oci")
	args := []string{"copy", "--src-tls-verify=false"}
	if all {
		args = append(args, "--all")
	}
	if _, err := Skopeo(t, append(args, "docker://"+ref, "oci:"+dir+":latest")...); err != nil {
		t.Fatalf("skopeo copy %s to oci: %v", ref, err)
	}
	return dir
}

// SkopeoInspectRaw returns the raw manifest of docker://ref.
func SkopeoInspectRaw(t testing.TB, ref string) []byte {
	t.Helper()
	b, err := Skopeo(t, "inspect", "--raw", "--tls-verify=false", "docker://"+ref)
	if err != nil {
		t.Fatalf("skopeo inspect %s: %v", ref, err)
	}
	return b
}

// DirImage is what skopeo wrote with the dir: transport.
type DirImage struct {
	// Manifest is manifest.json: the top-level manifest or index.
	Manifest []byte
	// Blobs maps digest → size of every blob file, verified against its
	// name.
	Blobs map[string]int64
	// Instances maps the digest of each per-platform manifest (with --all)
	// to its bytes.
	Instances map[string][]byte
}

// ReadDirImage reads and verifies a dir: copy. Files named <hex> are blobs
// whose sha256 must equal their name; <algo>-<hex>.manifest.json or
// <hex>.manifest.json are instance manifests.
func ReadDirImage(t testing.TB, dir string) DirImage {
	t.Helper()
	img := DirImage{Blobs: map[string]int64{}, Instances: map[string][]byte{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read skopeo dir: %v", err)
	}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		switch n := e.Name(); {
		case n == "manifest.json":
			if img.Manifest, err = os.ReadFile(path); err != nil {
				t.Fatalf("read %s: %v", path, err)
			}
		case strings.HasSuffix(n, ".manifest.json"):
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read %s: %v", path, err)
			}
			img.Instances[SHA256(b)] = b
		case n == "version":
		default:
			d, size := hashFile(t, path)
			if d != "sha256:"+n {
				t.Fatalf("skopeo dir blob %s has digest %s", n, d)
			}
			img.Blobs[d] = size
		}
	}
	if img.Manifest == nil {
		t.Fatalf("skopeo dir %s has no manifest.json", dir)
	}
	return img
}

// Crane runs crane with args and returns its stdout. crane talks plain HTTP
// to 127.0.0.1 by itself.
func Crane(t testing.TB, args ...string) ([]byte, error) {
	t.Helper()
	return run(craneBin(t), args...)
}

// CraneManifest returns the raw manifest of ref.
func CraneManifest(t testing.TB, ref string) []byte {
	t.Helper()
	b, err := Crane(t, "manifest", ref)
	if err != nil {
		t.Fatalf("crane manifest %s: %v", ref, err)
	}
	return b
}

// CraneDigest returns the manifest digest of ref as the registry reports it.
func CraneDigest(t testing.TB, ref string) string {
	t.Helper()
	b, err := Crane(t, "digest", ref)
	if err != nil {
		t.Fatalf("crane digest %s: %v", ref, err)
	}
	return strings.TrimSpace(string(b))
}

// CranePullOCI pulls ref (every platform of an index) into a new OCI layout
// and returns the verified digest → size of every blob in it, manifests
// included.
func CranePullOCI(t testing.TB, ref string) map[string]int64 {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	if _, err := Crane(t, "pull", "--format=oci", ref, dir); err != nil {
		t.Fatalf("crane pull %s: %v", ref, err)
	}
	return LayoutBlobs(t, dir)
}

// LayoutBlobs verifies every blob of an OCI layout against its file name
// and returns digest → size.
func LayoutBlobs(t testing.TB, dir string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	root := filepath.Join(dir, "blobs")
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		want := strings.Replace(filepath.ToSlash(rel), "/", ":", 1)
		got, size := hashFile(t, path)
		if got != want {
			return fmt.Errorf("blob %s has digest %s", want, got)
		}
		out[got] = size
		return nil
	})
	if err != nil {
		t.Fatalf("read OCI layout %s: %v", dir, err)
	}
	return out
}

// SHA256 returns the "sha256:<hex>" digest of b.
func SHA256(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func hashFile(t testing.TB, path string) (string, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer func() { _ = f.Close() }() // read-only: the hash is already taken
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatalf("hash %s: %v", path, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), n
}
