package auth

import (
	"context"
	"errors"
)

// Chain asks each Authenticator in turn until one knows the token: a
// token that one of them refuses as ErrUnknown goes on to the next, any
// other answer (an Identity, ErrForbidden, an outage) is final. Put the
// cheap, local ones first (StaticTokens before TokenReview), so an
// apiserver outage does not lock out the static admin tokens.
func Chain(as ...Authenticator) Authenticator { return chain(as) }

type chain []Authenticator

func (c chain) Authenticate(ctx context.Context, token string) (Identity, error) {
	err := error(ErrUnknown)
	for _, a := range c {
		var id Identity
		id, err = a.Authenticate(ctx, token)
		if !errors.Is(err, ErrUnknown) {
			return id, err
		}
	}
	return Identity{}, err
}
