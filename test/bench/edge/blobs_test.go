//go:build bench

package edge

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// Blobs are written straight into docker-registry's filesystem layout
// instead of being pushed over HTTP: a push of 16 GiB through the registry
// costs minutes, a file write seconds. docker-registry serves such a blob
// like a pushed one: it needs the data file and the repository's layer link.
//
//	<root>/docker/registry/v2/blobs/sha256/<hex[:2]>/<hex>/data
//	<root>/docker/registry/v2/repositories/<repo>/_layers/sha256/<hex>/link

// layoutBlob is a blob placed in an upstream registry's storage.
type layoutBlob struct {
	Repo   string
	Digest string // sha256:<hex>
	Size   int64
}

// writeRandomBlob writes size pseudo-random bytes (ChaCha8: incompressible,
// over 1 GB/s) as a blob of repo under the registry root.
func writeRandomBlob(root, repo string, size int64) (layoutBlob, error) {
	var seed [32]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return layoutBlob{}, fmt.Errorf("seed: %w", err)
	}
	tmp, err := os.CreateTemp(root, "bench-blob-*")
	if err != nil {
		return layoutBlob{}, fmt.Errorf("create blob file: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(tmp, h), 1<<20)
	if _, err := io.CopyN(bw, mrand.NewChaCha8(seed), size); err != nil {
		_ = tmp.Close() // the write error is the one to report; the file is removed
		return layoutBlob{}, fmt.Errorf("write blob: %w", err)
	}
	if err := bw.Flush(); err != nil {
		_ = tmp.Close() // the write error is the one to report; the file is removed
		return layoutBlob{}, fmt.Errorf("write blob: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return layoutBlob{}, fmt.Errorf("close blob: %w", err)
	}
	b := layoutBlob{Repo: repo, Digest: "sha256:" + hex.EncodeToString(h.Sum(nil)), Size: size}
	return b, placeBlob(root, b, tmp.Name())
}

// sparseBlobs makes n distinct blobs of size bytes each that cost almost no
// disk and no write time: size-tail zero bytes as a file hole, then tail
// random bytes that make each blob unique. The SHA-256 state after the
// common zero prefix is computed once and cloned, so n blobs cost one hash
// of the prefix. The edge still receives, writes and hashes every byte; for
// a memory measurement the content does not matter.
func sparseBlobs(root, repo string, n int, size int64) ([]layoutBlob, error) {
	const tail = 1 << 20
	if size <= tail {
		return nil, fmt.Errorf("sparse blob of %d bytes: must exceed the %d-byte tail", size, tail)
	}
	prefix := sha256.New()
	if _, err := io.CopyN(prefix, zeroReader{}, size-tail); err != nil {
		return nil, fmt.Errorf("hash zero prefix: %w", err)
	}
	state, err := prefix.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("save hash state: %w", err)
	}
	var out []layoutBlob
	for i := 0; i < n; i++ {
		end := make([]byte, tail)
		if _, err := rand.Read(end); err != nil {
			return nil, fmt.Errorf("random tail: %w", err)
		}
		h := sha256.New()
		if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(state); err != nil {
			return nil, fmt.Errorf("restore hash state: %w", err)
		}
		b, err := writeSparse(root, repo, size, end, h)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func writeSparse(root, repo string, size int64, end []byte, h hash.Hash) (layoutBlob, error) {
	tmp, err := os.CreateTemp(root, "bench-sparse-*")
	if err != nil {
		return layoutBlob{}, fmt.Errorf("create sparse blob: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteAt(end, size-int64(len(end))) // the hole before it reads as zeros
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return layoutBlob{}, fmt.Errorf("write sparse blob: %w", err)
	}
	h.Write(end)
	b := layoutBlob{Repo: repo, Digest: "sha256:" + hex.EncodeToString(h.Sum(nil)), Size: size}
	return b, placeBlob(root, b, tmp.Name())
}

// placeBlob moves the complete file tmp into the layout and links it into
// the repository.
func placeBlob(root string, b layoutBlob, tmp string) error {
	hexd := b.Digest[len("sha256:"):]
	v2 := filepath.Join(root, "docker", "registry", "v2")
	data := filepath.Join(v2, "blobs", "sha256", hexd[:2], hexd, "data")
	link := filepath.Join(v2, "repositories", filepath.FromSlash(b.Repo), "_layers", "sha256", hexd, "link")
	for _, dir := range []string{filepath.Dir(data), filepath.Dir(link)} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("registry layout: %w", err)
		}
	}
	if err := os.Rename(tmp, data); err != nil {
		return fmt.Errorf("place blob: %w", err)
	}
	if err := os.WriteFile(link, []byte(b.Digest), 0o644); err != nil {
		return fmt.Errorf("link blob into %s: %w", b.Repo, err)
	}
	return nil
}

// removeLayoutBlob deletes a blob's data (the link stays, harmless). A
// failure fails the test: it would leave up to GiBs on the disk.
func removeLayoutBlob(t testing.TB, root string, b layoutBlob) {
	t.Helper()
	hexd := b.Digest[len("sha256:"):]
	if err := os.RemoveAll(filepath.Join(root, "docker", "registry", "v2", "blobs", "sha256", hexd[:2], hexd)); err != nil {
		t.Errorf("remove bench blob %s: %v", b.Digest, err)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
