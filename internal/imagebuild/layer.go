package imagebuild

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The non-root user the images run as: the same numeric UID/GID the chart
// and the edge Deployments set (runAsUser 65532), named like distroless's
// "nonroot" so logs and `id` inside the container show a name.
const (
	UID      = 65532
	UserName = "nonroot"
	HomeDir  = "/home/nonroot"
	// BinDir is where the binary lives: /usr/local/bin/<name>.
	BinDir = "/usr/local/bin"
	// CACertPath is the CA bundle's path in the image, where Go's
	// crypto/x509 looks first on Linux.
	CACertPath = "/etc/ssl/certs/ca-certificates.crt"
)

// passwd and group name root, nobody and nonroot; the shells are nologin
// because the image has no shell at all.
const (
	passwd = "root:x:0:0:root:/root:/sbin/nologin\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
		"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	group = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"
)

// entry is one file or directory of the layer.
type entry struct {
	// name is the absolute path in the image.
	name     string
	dir      bool
	mode     int64
	uid, gid int
	body     []byte
}

// rootfsEntries lists the image's files: the binary, the CA bundle,
// passwd and group, the non-root user's home and a sticky /tmp (programs
// that ask os.TempDir get a directory that exists).
func rootfsEntries(name string, binary, caCerts []byte) []entry {
	return []entry{
		{name: path.Join(BinDir, name), mode: 0o755, body: binary},
		{name: CACertPath, mode: 0o644, body: caCerts},
		{name: "/etc/passwd", mode: 0o644, body: []byte(passwd)},
		{name: "/etc/group", mode: 0o644, body: []byte(group)},
		{name: HomeDir, dir: true, mode: 0o700, uid: UID, gid: UID},
		{name: "/tmp", dir: true, mode: 0o1777},
	}
}

// layerTar writes entries, and every parent directory not among them
// (root-owned, 0755), as a tar sorted by path with every mtime set to
// mtime and no user or group names, so the bytes depend on the contents
// only.
func layerTar(entries []entry, mtime time.Time) ([]byte, error) {
	byName := map[string]entry{}
	for _, e := range entries {
		byName[strings.TrimPrefix(e.name, "/")] = e
	}
	for _, e := range entries {
		for d := path.Dir(strings.TrimPrefix(e.name, "/")); d != "."; d = path.Dir(d) {
			if _, ok := byName[d]; !ok {
				byName[d] = entry{name: "/" + d, dir: true, mode: 0o755}
			}
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		e := byName[n]
		h := &tar.Header{Name: n, Mode: e.mode, Uid: e.uid, Gid: e.gid, ModTime: mtime, Format: tar.FormatPAX}
		if e.dir {
			h.Typeflag, h.Name = tar.TypeDir, n+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("write tar header %s: %w", n, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, fmt.Errorf("write tar entry %s: %w", n, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("close tar: %w", err)
	}
	return buf.Bytes(), nil
}

// gzipLayer compresses a layer tar once, at the best compression (the
// layer is pulled by every node many times and built rarely), and wraps it
// as an OCI layer. compress/gzip writes no name and a zero mtime into the
// header, so the bytes depend on the tar only.
func gzipLayer(tarBytes []byte) (v1.Layer, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, fmt.Errorf("gzip layer: %w", err)
	}
	if _, err := zw.Write(tarBytes); err != nil {
		return nil, fmt.Errorf("gzip layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("gzip layer: %w", err)
	}
	compressed := buf.Bytes()
	// The opener returns gzip bytes, which tarball keeps as the layer's
	// compressed form instead of compressing again on every read.
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(compressed)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("gzip layer: %w", err)
	}
	return l, nil
}
