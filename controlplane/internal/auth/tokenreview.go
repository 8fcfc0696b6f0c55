package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
)

// The SubjectAccessReview that authorises an admin: may the user "use"
// the resource "adminapi" of the API group "k8s-selfhost-repo.io"? No such
// resource is served; RBAC authorises it all the same, so a ClusterRole
//
//	rules:
//	- apiGroups: ["k8s-selfhost-repo.io"]
//	  resources: ["adminapi"]
//	  verbs: ["use"]
//
// bound to a user, group or ServiceAccount makes it an admin.
const (
	AdminAPIGroup    = kubecontract.Domain
	AdminAPIResource = "adminapi"
	AdminAPIVerb     = "use"
)

// Defaults of TokenReviewOptions.
const (
	DefaultCacheTTL         = time.Minute
	DefaultNegativeCacheTTL = 5 * time.Second
	DefaultCacheSize        = 4096
	DefaultReviewTimeout    = 10 * time.Second
)

// TokenReviewOptions configure a TokenReview authenticator.
type TokenReviewOptions struct {
	// EdgeAudience is the audience of the edges' projected ServiceAccount
	// tokens ("k8s-selfhost-repo-controlplane"). Required: without it any
	// token of an edge ServiceAccount, wherever it leaked, would do.
	EdgeAudience string
	// AdminAudiences are the audiences an admin token is reviewed for;
	// empty means the apiserver's own (what `kubectl create token` issues
	// by default). Listing EdgeAudience here accepts admin tokens minted
	// for this control plane only (`kubectl create token --audience`).
	AdminAudiences []string
	// AdminGroups: a member of any of these groups is an admin without a
	// SubjectAccessReview.
	AdminGroups []string
	// CacheTTL bounds how long a successful review is reused (also never
	// past the token's own expiry); 0 means DefaultCacheTTL. A revoked
	// token (deleted ServiceAccount, removed binding) keeps working for at
	// most this long.
	CacheTTL time.Duration
	// NegativeCacheTTL is how long a refusal is reused; 0 means
	// DefaultNegativeCacheTTL.
	NegativeCacheTTL time.Duration
	// CacheSize bounds the cached results; 0 means DefaultCacheSize.
	CacheSize int
	// ReviewTimeout bounds the apiserver calls of one token; 0 means
	// DefaultReviewTimeout.
	ReviewTimeout time.Duration
	// Log receives one line per review (user, kind, outcome), never a
	// token; nil discards.
	Log *slog.Logger
	// Now is the clock of the cache; nil means time.Now.
	Now func() time.Time
}

// TokenReview is the in-cluster Authenticator. An edge presents its
// projected ServiceAccount token for EdgeAudience: a TokenReview for that
// audience names the user system:serviceaccount:<ns>:selfhost-edge, and
// the namespace comes from there, never from the caller. An admin presents
// any Kubernetes token: a TokenReview for AdminAudiences authenticates it,
// and membership of AdminGroups or a SubjectAccessReview (AdminAPIVerb on
// AdminAPIResource in AdminAPIGroup) authorises it.
//
// Results are cached by the token's SHA-256 (never the token), and
// concurrent lookups of one token share one review.
type TokenReview struct {
	client kubernetes.Interface
	opts   TokenReviewOptions
	log    *slog.Logger
	cache  *resultCache
	flight singleflight.Group
}

var _ Authenticator = (*TokenReview)(nil)

// NewTokenReview returns a TokenReview authenticator asking client's
// apiserver. The client's credentials need "create" on tokenreviews
// (authentication.k8s.io) and subjectaccessreviews (authorization.k8s.io).
func NewTokenReview(client kubernetes.Interface, opts TokenReviewOptions) (*TokenReview, error) {
	if opts.EdgeAudience == "" {
		return nil, errors.New("token review: EdgeAudience is required")
	}
	if opts.CacheTTL <= 0 {
		opts.CacheTTL = DefaultCacheTTL
	}
	if opts.NegativeCacheTTL <= 0 {
		opts.NegativeCacheTTL = DefaultNegativeCacheTTL
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.ReviewTimeout <= 0 {
		opts.ReviewTimeout = DefaultReviewTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &TokenReview{client: client, opts: opts, log: log, cache: newResultCache(opts.CacheSize)}, nil
}

// outcome is what the reviews of one token decided.
type outcome struct {
	id  Identity
	err error
	// expiry is the token's own expiry when known (zero otherwise).
	expiry time.Time
}

// Authenticate implements Authenticator.
func (r *TokenReview) Authenticate(ctx context.Context, token string) (Identity, error) {
	key := sha256.Sum256([]byte(token))
	if rv, ok := r.cache.get(key, r.opts.Now()); ok {
		return rv.id, rv.err
	}
	ch := r.flight.DoChan(string(key[:]), func() (any, error) {
		// Shared by every caller of this token: no one caller's
		// cancellation may fail the others.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.ReviewTimeout)
		defer cancel()
		rv := r.review(ctx, token)
		r.remember(key, rv)
		return rv, nil
	})
	select {
	case <-ctx.Done():
		return Identity{}, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	case res := <-ch:
		rv := res.Val.(outcome)
		return rv.id, rv.err
	}
}

// remember caches rv: a success until min(CacheTTL, token expiry), a
// refusal for NegativeCacheTTL, an outage not at all.
func (r *TokenReview) remember(key [sha256.Size]byte, rv outcome) {
	now := r.opts.Now()
	var until time.Time
	switch {
	case rv.err == nil:
		until = now.Add(r.opts.CacheTTL)
		if !rv.expiry.IsZero() && rv.expiry.Before(until) {
			until = rv.expiry
		}
	case errors.Is(rv.err, ErrUnknown), errors.Is(rv.err, ErrForbidden):
		until = now.Add(r.opts.NegativeCacheTTL)
	default:
		return
	}
	if until.After(now) {
		r.cache.put(key, rv, until, now)
	}
}

// review asks the apiserver: first as an edge (EdgeAudience), then as an
// admin (AdminAudiences, then groups or a SubjectAccessReview).
func (r *TokenReview) review(ctx context.Context, token string) outcome {
	edge, err := r.tokenReview(ctx, token, []string{r.opts.EdgeAudience})
	if err != nil {
		return r.unavailable("token review", err)
	}
	expiry := tokenExpiry(token)
	var edgeUser string // authenticated for EdgeAudience, but not an edge
	if edge.Authenticated && slices.Contains(edge.Audiences, r.opts.EdgeAudience) {
		if ns, ok := edgeNamespace(edge.User.Username); ok {
			id := Identity{Kind: KindEdge, Namespace: ns, Name: "edge/" + ns}
			r.log.Debug("token reviewed", "kind", id.Kind, "user", edge.User.Username, "namespace", ns)
			return outcome{id: id, expiry: expiry}
		}
		edgeUser = edge.User.Username
		if slices.Contains(r.opts.AdminAudiences, r.opts.EdgeAudience) {
			return r.authorizeAdmin(ctx, edge.User, expiry)
		}
	}

	admin, err := r.tokenReview(ctx, token, r.opts.AdminAudiences)
	if err != nil {
		return r.unavailable("token review", err)
	}
	switch {
	case !admin.Authenticated || !audiencesMatch(admin.Audiences, r.opts.AdminAudiences):
		if edgeUser != "" {
			r.log.Info("token refused: not an edge", "user", edgeUser, "audience", r.opts.EdgeAudience)
			return outcome{err: fmt.Errorf("%w: the token for audience %q belongs to %q, not to an edge ServiceAccount (%s in the edge's namespace)",
				ErrUnknown, r.opts.EdgeAudience, edgeUser, kubecontract.EdgeName)}
		}
		r.log.Debug("token refused: not authenticated by the apiserver", "reason", scrub(admin.Error, token))
		return outcome{err: fmt.Errorf("%w: the Kubernetes apiserver does not authenticate this token", ErrUnknown)}
	case isEdgeUser(admin.User.Username):
		// An edge's token without the audience: an edge mounted the wrong
		// token, or someone replays one that was meant for the apiserver.
		r.log.Info("token refused: edge token without the control plane's audience", "user", admin.User.Username, "audience", r.opts.EdgeAudience)
		return outcome{err: fmt.Errorf("%w: %q presented a token without the audience %q: mount a projected ServiceAccount token for that audience",
			ErrUnknown, admin.User.Username, r.opts.EdgeAudience)}
	}
	return r.authorizeAdmin(ctx, admin.User, expiry)
}

// authorizeAdmin admits u by group or by SubjectAccessReview.
func (r *TokenReview) authorizeAdmin(ctx context.Context, u authenticationv1.UserInfo, expiry time.Time) outcome {
	id := Identity{Kind: KindAdmin, Name: "admin/" + u.Username}
	for _, g := range u.Groups {
		if slices.Contains(r.opts.AdminGroups, g) {
			r.log.Debug("token reviewed", "kind", id.Kind, "user", u.Username, "by_group", g)
			return outcome{id: id, expiry: expiry}
		}
	}
	extra := make(map[string]authorizationv1.ExtraValue, len(u.Extra))
	for k, v := range u.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar, err := r.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User: u.Username, Groups: u.Groups, UID: u.UID, Extra: extra,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Group: AdminAPIGroup, Resource: AdminAPIResource, Verb: AdminAPIVerb},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return r.unavailable("subject access review", err)
	}
	if !sar.Status.Allowed {
		r.log.Info("admin refused", "user", u.Username, "reason", sar.Status.Reason, "evaluation_error", sar.Status.EvaluationError)
		return outcome{err: fmt.Errorf("%w: %q may not use the admin API: RBAC must allow verb %q on resource %q in API group %q",
			ErrForbidden, u.Username, AdminAPIVerb, AdminAPIResource, AdminAPIGroup)}
	}
	r.log.Debug("token reviewed", "kind", id.Kind, "user", u.Username, "by", "rbac")
	return outcome{id: id, expiry: expiry}
}

func (r *TokenReview) tokenReview(ctx context.Context, token string, audiences []string) (authenticationv1.TokenReviewStatus, error) {
	tr, err := r.client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return authenticationv1.TokenReviewStatus{}, err
	}
	return tr.Status, nil
}

// unavailable logs an apiserver failure (the client error names the
// request, never its body) and refuses the caller.
func (r *TokenReview) unavailable(op string, err error) outcome {
	r.log.Warn("cannot authenticate: the apiserver did not answer", "op", op, "err", err)
	return outcome{err: fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)}
}

// edgeNamespace returns ns when user is exactly
// kubecontract.EdgeServiceAccountUser(ns).
func edgeNamespace(user string) (string, bool) {
	rest, ok := strings.CutPrefix(user, "system:serviceaccount:")
	if !ok {
		return "", false
	}
	ns, _, ok := strings.Cut(rest, ":")
	if !ok || ns == "" || user != kubecontract.EdgeServiceAccountUser(ns) {
		return "", false
	}
	return ns, true
}

func isEdgeUser(user string) bool {
	_, ok := edgeNamespace(user)
	return ok
}

// audiencesMatch: with no audiences asked for, the apiserver's default
// applies; otherwise the review must grant one of them.
func audiencesMatch(got, want []string) bool {
	if len(want) == 0 {
		return true
	}
	for _, a := range got {
		if slices.Contains(want, a) {
			return true
		}
	}
	return false
}

// scrub removes the token from a message of the apiserver, in case an
// authenticator webhook echoes it.
func scrub(msg, token string) string {
	return strings.ReplaceAll(msg, token, "REDACTED")
}
