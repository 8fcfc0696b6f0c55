// Package auth authenticates gRPC callers by bearer token and decides
// which services each kind of caller may use. The Authenticator maps a
// token to an Identity (standalone: StaticTokens from the config file;
// in-cluster: TokenReview, which asks the Kubernetes apiserver); the
// interceptors put the Identity into the call's context and translate
// failures into Unauthenticated, PermissionDenied or Unavailable. Nothing
// here logs or returns a token.
package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors of Authenticate and ParseBearer.
var (
	// ErrMissing: the call carries no authorization metadata.
	ErrMissing = errors.New("missing bearer token")
	// ErrMalformed: the authorization metadata is not "Bearer <token>".
	ErrMalformed = errors.New("malformed authorization metadata")
	// ErrUnknown: no identity has this token (Unauthenticated).
	ErrUnknown = errors.New("unknown token")
	// ErrForbidden: the token is valid but its holder may not use this
	// control plane (PermissionDenied).
	ErrForbidden = errors.New("not authorised")
	// ErrUnavailable: the authenticator could not decide, e.g. the
	// apiserver is unreachable (Unavailable). The caller is refused, never
	// let through.
	ErrUnavailable = errors.New("authentication unavailable")
)

// Kind is what an identity may do.
type Kind int

// Kinds of callers.
const (
	// KindAdmin may call the admin API.
	KindAdmin Kind = iota + 1
	// KindEdge may open a config stream for its namespace.
	KindEdge
)

func (k Kind) String() string {
	switch k {
	case KindAdmin:
		return "admin"
	case KindEdge:
		return "edge"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Identity is an authenticated caller.
type Identity struct {
	Kind Kind
	// Namespace is the namespace an edge serves; empty for admins.
	Namespace string
	// Name identifies the caller in logs ("admin#0", "edge/team-a"); it is
	// never the token.
	Name string
}

// Authenticator maps a bearer token to an Identity. Errors wrap
// ErrUnknown for a token that belongs to nobody, ErrForbidden for a valid
// token whose holder is not allowed in; any other error (normally wrapping
// ErrUnavailable) means "cannot tell now". Error messages go back to the
// caller and must never contain the token.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (Identity, error)
}

type identityKey struct{}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the Identity the interceptor authenticated.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// ParseBearer extracts the token from the values of the "authorization"
// metadata key: exactly one value, "Bearer <token>" (scheme
// case-insensitive, RFC 6750 b64token syntax).
func ParseBearer(values []string) (string, error) {
	switch len(values) {
	case 0:
		return "", ErrMissing
	case 1:
	default:
		return "", fmt.Errorf("%w: %d authorization values, want one", ErrMalformed, len(values))
	}
	scheme, token, ok := strings.Cut(values[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", fmt.Errorf("%w: want \"Bearer <token>\"", ErrMalformed)
	}
	if token == "" || !isB64Token(token) {
		return "", fmt.Errorf("%w: the token after \"Bearer \" is empty or has characters outside A-Z a-z 0-9 . _ ~ + / - =", ErrMalformed)
	}
	return token, nil
}

// isB64Token checks RFC 6750's b64token: 1*( ALPHA / DIGIT / "-" / "." /
// "_" / "~" / "+" / "/" ) *"=".
func isB64Token(s string) bool {
	body := strings.TrimRight(s, "=")
	if body == "" {
		return false
	}
	for _, c := range body {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.ContainsRune("-._~+/", c):
		default:
			return false
		}
	}
	return true
}
