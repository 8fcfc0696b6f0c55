package blob

import (
	"context"
	"errors"
)

// ErrDenied means the storage broker refused access to an object: the
// namespace has no proof of upstream access in the scope asked for, or the
// key is not one it may reach. Callers treat it like a miss (fetch from the
// upstream with their own credentials; serve without caching), never as a
// storage fault: the storage works, it just is not theirs to use here.
var ErrDenied = errors.New("access denied by the storage broker")

// scopeKey is the context key of a Scope.
type scopeKey struct{}

// scope is where a shared object is wanted.
type scope struct{ prefix, repository string }

// WithScope returns ctx carrying the upstream prefix and repository of the
// pull it serves. A store that grants shared objects per repository (the
// storage broker) asks for access in this scope; other stores ignore it.
func WithScope(ctx context.Context, prefix, repository string) context.Context {
	return context.WithValue(ctx, scopeKey{}, scope{prefix: prefix, repository: repository})
}

// ScopeFrom returns the scope WithScope put in ctx; ok is false when there
// is none.
func ScopeFrom(ctx context.Context) (prefix, repository string, ok bool) {
	s, ok := ctx.Value(scopeKey{}).(scope)
	return s.prefix, s.repository, ok
}
