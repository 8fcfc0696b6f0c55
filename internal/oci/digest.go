package oci

import (
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"strings"
)

// ErrInvalidDigest reports a digest string that is malformed or uses an
// algorithm the edge does not verify.
var ErrInvalidDigest = errors.New("invalid digest")

// Digest is a validated content digest such as "sha256:<64 hex>".
// The zero value is not a valid digest.
type Digest struct {
	Algorithm string
	Hex       string
}

var digestHexLen = map[string]int{"sha256": 64, "sha512": 128}

// ParseDigest validates s and returns it as a Digest. Only sha256 and sha512
// with lower-case hex are accepted: these are the algorithms the spec
// registers and the ones the edge can verify before anything is stored.
func ParseDigest(s string) (Digest, error) {
	alg, hexPart, ok := strings.Cut(s, ":")
	if !ok {
		return Digest{}, fmt.Errorf("%w: %q has no algorithm", ErrInvalidDigest, truncate(s))
	}
	want, known := digestHexLen[alg]
	if !known {
		return Digest{}, fmt.Errorf("%w: unsupported algorithm %q", ErrInvalidDigest, truncate(alg))
	}
	if len(hexPart) != want {
		return Digest{}, fmt.Errorf("%w: %s needs %d hex characters, got %d", ErrInvalidDigest, alg, want, len(hexPart))
	}
	for i := 0; i < len(hexPart); i++ {
		c := hexPart[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return Digest{}, fmt.Errorf("%w: non-hex character in %q", ErrInvalidDigest, truncate(s))
		}
	}
	return Digest{Algorithm: alg, Hex: hexPart}, nil
}

// FromBytes returns the sha256 digest of b.
func FromBytes(b []byte) Digest {
	sum := sha256.Sum256(b)
	return Digest{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sum[:])}
}

// String returns the canonical "<algorithm>:<hex>" form.
func (d Digest) String() string { return d.Algorithm + ":" + d.Hex }

// IsZero reports whether d is the zero Digest.
func (d Digest) IsZero() bool { return d.Algorithm == "" }

// Hash returns a new hash.Hash for d's algorithm.
func (d Digest) Hash() hash.Hash {
	if d.Algorithm == "sha512" {
		return sha512.New()
	}
	return sha256.New()
}

// Matches reports whether the sum of h equals d.
func (d Digest) Matches(h hash.Hash) bool {
	return fmt.Sprintf("%x", h.Sum(nil)) == d.Hex
}

func truncate(s string) string {
	const maxLen = 80
	if len(s) > maxLen {
		return s[:maxLen] + "…"
	}
	return s
}
