package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
)

// StaticTokens is the standalone Authenticator: a fixed set of admin tokens
// and one edge token per namespace, from the config file.
type StaticTokens struct {
	// Keyed by the token's SHA-256: a map lookup on a digest leaks nothing
	// useful through timing, unlike comparing the tokens themselves, and the
	// tokens are not kept in memory in the clear.
	byDigest map[[sha256.Size]byte]Identity
}

var _ Authenticator = (*StaticTokens)(nil)

// ErrDuplicate means the same token was given twice.
var ErrDuplicate = errors.New("duplicate token")

// NewStaticTokens builds the authenticator. edge maps a namespace to its
// edge token. A token used twice is an error (the config file loader
// reports it first, naming the places).
func NewStaticTokens(admin []string, edge map[string]string) (*StaticTokens, error) {
	s := &StaticTokens{byDigest: map[[sha256.Size]byte]Identity{}}
	add := func(token string, id Identity) error {
		d := sha256.Sum256([]byte(token))
		if _, dup := s.byDigest[d]; dup {
			return fmt.Errorf("%w: %s", ErrDuplicate, id.Name)
		}
		s.byDigest[d] = id
		return nil
	}
	for i, t := range admin {
		if err := add(t, Identity{Kind: KindAdmin, Name: fmt.Sprintf("admin#%d", i)}); err != nil {
			return nil, err
		}
	}
	for ns, t := range edge {
		if err := add(t, Identity{Kind: KindEdge, Namespace: ns, Name: "edge/" + ns}); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Authenticate implements Authenticator.
func (s *StaticTokens) Authenticate(_ context.Context, token string) (Identity, error) {
	id, ok := s.byDigest[sha256.Sum256([]byte(token))]
	if !ok {
		return Identity{}, ErrUnknown
	}
	return id, nil
}
