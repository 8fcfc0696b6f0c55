package harness

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	mrand "math/rand/v2"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// bigLayer is an uncompressed tar layer with one file of pseudo-random
// bytes, regenerated from its seed on every read. go-containerregistry's
// random.Layer holds the whole layer in memory and gzips it; for a 256 MiB
// layer that is slow and large, and gzip gains nothing on random data.
// Digest and DiffID are equal because the layer is not compressed.
type bigLayer struct {
	seed      [32]byte
	fileSize  int64
	header    []byte
	trailer   []byte
	digest    v1.Hash
	mediaType types.MediaType
}

func newBigLayer(fileSize int64, mt types.MediaType) (*bigLayer, error) {
	l := &bigLayer{fileSize: fileSize, mediaType: mt}
	if _, err := rand.Read(l.seed[:]); err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	// WriteHeader emits the 512-byte header block at once; the file body
	// and the padding are produced by the reader below.
	if err := tw.WriteHeader(&tar.Header{Name: "big.bin", Size: fileSize, Mode: 0o644, Typeflag: tar.TypeReg}); err != nil {
		return nil, fmt.Errorf("tar header: %w", err)
	}
	l.header = hdr.Bytes()
	pad := (512 - fileSize%512) % 512
	l.trailer = make([]byte, pad+1024) // padding + two zero end-of-archive blocks
	h := sha256.New()
	r, _ := l.Uncompressed()
	if _, err := io.Copy(h, r); err != nil {
		return nil, fmt.Errorf("hash big layer: %w", err)
	}
	l.digest = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
	return l, nil
}

func (l *bigLayer) Digest() (v1.Hash, error) { return l.digest, nil }
func (l *bigLayer) DiffID() (v1.Hash, error) { return l.digest, nil }
func (l *bigLayer) Size() (int64, error) {
	return int64(len(l.header)) + l.fileSize + int64(len(l.trailer)), nil
}
func (l *bigLayer) MediaType() (types.MediaType, error) { return l.mediaType, nil }
func (l *bigLayer) Compressed() (io.ReadCloser, error)  { return l.Uncompressed() }

// Uncompressed regenerates the layer: ChaCha8 from the same seed gives the
// same bytes at well over 1 GB/s.
func (l *bigLayer) Uncompressed() (io.ReadCloser, error) {
	body := io.LimitReader(mrand.NewChaCha8(l.seed), l.fileSize)
	return io.NopCloser(io.MultiReader(bytes.NewReader(l.header), body, bytes.NewReader(l.trailer))), nil
}
