package registry

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
)

// Realm is the Basic auth realm of the edge's pull-token challenge.
const Realm = "k8s-selfhost-repo"

// Policy is a namespace's policy as the registry enforces it
// (docs/security.md). The zero value allows everything. It is immutable once
// built.
type Policy struct {
	allowed  map[string]bool // canonical prefixes; empty: all
	tokenSum *[sha256.Size]byte
}

// NewPolicy returns a Policy. allowed are canonical upstream prefixes (empty:
// every upstream); pullToken, when set, is the password every client must
// present with HTTP Basic auth.
func NewPolicy(allowed []string, pullToken string) Policy {
	p := Policy{}
	if len(allowed) > 0 {
		p.allowed = make(map[string]bool, len(allowed))
		for _, a := range allowed {
			p.allowed[a] = true
		}
	}
	if pullToken != "" {
		// Only a digest is kept: comparing digests takes the same time
		// whatever the length of the guess, and the token itself never
		// sits in the request path's memory.
		sum := sha256.Sum256([]byte(pullToken))
		p.tokenSum = &sum
	}
	return p
}

// Allows reports whether the namespace may pull through prefix (canonical).
func (p Policy) Allows(prefix string) bool {
	return len(p.allowed) == 0 || p.allowed[prefix]
}

// RequiresToken reports whether clients must present the pull token.
func (p Policy) RequiresToken() bool { return p.tokenSum != nil }

// authorized reports whether r carries the pull token as its Basic auth
// password (any username: containerd sends whatever the pull secret says).
func (p Policy) authorized(r *http.Request) bool {
	if p.tokenSum == nil {
		return true
	}
	_, pw, ok := r.BasicAuth()
	if !ok {
		return false
	}
	sum := sha256.Sum256([]byte(pw))
	return subtle.ConstantTimeCompare(sum[:], p.tokenSum[:]) == 1
}

// challenge answers an unauthenticated request: 401 with a Basic challenge,
// so containerd retries with the pod's image pull secret.
func challenge(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("WWW-Authenticate", `Basic realm="`+Realm+`"`)
	oci.WriteError(w, r, oci.NewError(http.StatusUnauthorized, oci.CodeUnauthorized,
		"this edge requires the namespace's pull token (HTTP Basic auth)"))
}
