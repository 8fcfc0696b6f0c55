package blob

import (
	"fmt"
	"hash"
)

// Verifier hashes and counts bytes so a Writer can check them at Commit.
// Implementations embed it rather than hashing by themselves.
type Verifier struct {
	want Expect
	h    hash.Hash
	n    int64
}

// NewVerifier returns a Verifier for want.
func NewVerifier(want Expect) *Verifier {
	return &Verifier{want: want, h: want.Digest.Hash()}
}

// Write hashes p.
func (v *Verifier) Write(p []byte) (int, error) {
	v.n += int64(len(p))
	return v.h.Write(p)
}

// Written returns the number of bytes seen so far.
func (v *Verifier) Written() int64 { return v.n }

// Check returns nil when everything written matches the expected digest and
// size, and an error wrapping ErrVerify otherwise.
func (v *Verifier) Check() error {
	if v.want.Size >= 0 && v.n != v.want.Size {
		return fmt.Errorf("%w: size %d, want %d", ErrVerify, v.n, v.want.Size)
	}
	if !v.want.Digest.Matches(v.h) {
		return fmt.Errorf("%w: content does not match %s", ErrVerify, v.want.Digest)
	}
	return nil
}
