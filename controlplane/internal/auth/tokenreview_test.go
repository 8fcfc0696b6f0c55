package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/kubecontract"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
)

const (
	edgeAudience   = "k8s-selfhost-repo-controlplane"
	apiAudience    = "https://kubernetes.default.svc"
	adminGroup     = "k8s-selfhost-repo:admins"
	tokEdgeA       = "tok-edge-a-0000000000"
	tokEdgeNoAud   = "tok-edge-a-default-aud"
	tokOtherSA     = "tok-team-a-default-sa"
	tokWrongAud    = "tok-edge-a-wrong-aud00"
	tokGroupAdmin  = "tok-alice-group-admin"
	tokRBACAdmin   = "tok-bob-rbac-admin-000"
	tokDenied      = "tok-carol-denied-00000"
	tokForUsAdmin  = "tok-dave-for-our-aud00"
	tokUnknown     = "tok-nobody-knows-me000"
	tokEchoedInErr = "tok-echoed-in-error000"
)

// fakeAPI is an apiserver that knows a few tokens, each with its user and
// audiences, and allows the users in allowed by RBAC.
type fakeAPI struct {
	client  *fake.Clientset
	reviews atomic.Int32 // TokenReviews
	sars    atomic.Int32 // SubjectAccessReviews

	mu       sync.Mutex
	tokens   map[string]fakeToken
	allowed  map[string]bool
	fail     error                                       // every call fails with it
	lastSAR  authorizationv1.SubjectAccessReviewSpec     // the last SAR asked
	block    chan struct{}                               // when set, TokenReviews wait for it to close
	entered  chan struct{}                               // signalled when a blocked TokenReview starts
	spyToken func(spec authenticationv1.TokenReviewSpec) // sees every review
}

type fakeToken struct {
	user      authenticationv1.UserInfo
	audiences []string
}

func sa(ns, name string) authenticationv1.UserInfo {
	return authenticationv1.UserInfo{
		Username: "system:serviceaccount:" + ns + ":" + name,
		UID:      "uid-" + ns + "-" + name,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
}

func user(name string, groups ...string) authenticationv1.UserInfo {
	return authenticationv1.UserInfo{Username: name, UID: "uid-" + name, Groups: append(groups, "system:authenticated"),
		Extra: map[string]authenticationv1.ExtraValue{"example.org/team": {"platform"}}}
}

func newFakeAPI() *fakeAPI {
	f := &fakeAPI{
		client: fake.NewClientset(),
		tokens: map[string]fakeToken{
			tokEdgeA:       {sa("team-a", kubecontract.EdgeName), []string{edgeAudience}},
			tokEdgeNoAud:   {sa("team-a", kubecontract.EdgeName), []string{apiAudience}},
			tokOtherSA:     {sa("team-a", "default"), []string{edgeAudience}},
			tokWrongAud:    {sa("team-a", kubecontract.EdgeName), []string{"something-else"}},
			tokGroupAdmin:  {user("alice", adminGroup), []string{apiAudience}},
			tokRBACAdmin:   {user("bob"), []string{apiAudience}},
			tokDenied:      {user("carol"), []string{apiAudience}},
			tokForUsAdmin:  {user("dave"), []string{edgeAudience}},
			tokEchoedInErr: {user("nobody"), nil},
		},
		allowed: map[string]bool{"bob": true, "dave": true},
	}
	f.client.PrependReactor("create", "tokenreviews", f.tokenReview)
	f.client.PrependReactor("create", "subjectaccessreviews", f.subjectAccessReview)
	return f
}

func (f *fakeAPI) tokenReview(action k8stesting.Action) (bool, runtime.Object, error) {
	f.reviews.Add(1)
	f.mu.Lock()
	block, entered, fail, spy := f.block, f.entered, f.fail, f.spyToken
	f.mu.Unlock()
	if block != nil {
		entered <- struct{}{}
		<-block
	}
	if fail != nil {
		return true, nil, fail
	}
	tr := action.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview).DeepCopy()
	if spy != nil {
		spy(tr.Spec)
	}
	asked := tr.Spec.Audiences
	if len(asked) == 0 {
		asked = []string{apiAudience}
	}
	f.mu.Lock()
	tok, ok := f.tokens[tr.Spec.Token]
	f.mu.Unlock()
	var granted []string
	for _, a := range tok.audiences {
		if slices.Contains(asked, a) {
			granted = append(granted, a)
		}
	}
	if !ok || len(granted) == 0 {
		// Some authenticators echo what they were given; the code under
		// test must not pass it on.
		tr.Status = authenticationv1.TokenReviewStatus{Error: "invalid bearer token " + tr.Spec.Token}
		return true, tr, nil
	}
	tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: tok.user, Audiences: granted}
	return true, tr, nil
}

func (f *fakeAPI) subjectAccessReview(action k8stesting.Action) (bool, runtime.Object, error) {
	f.sars.Add(1)
	sar := action.(k8stesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview).DeepCopy()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return true, nil, f.fail
	}
	f.lastSAR = sar.Spec
	ra := sar.Spec.ResourceAttributes
	sar.Status.Allowed = f.allowed[sar.Spec.User] && ra != nil &&
		ra.Group == AdminAPIGroup && ra.Resource == AdminAPIResource && ra.Verb == AdminAPIVerb && ra.Namespace == ""
	return true, sar, nil
}

func newTestReview(t *testing.T, f *fakeAPI, opts TokenReviewOptions) (*TokenReview, *testkit.LogBuffer) {
	t.Helper()
	logs := &testkit.LogBuffer{}
	opts.EdgeAudience = edgeAudience
	opts.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := NewTokenReview(f.client, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r, logs
}

func TestTokenReviewIdentities(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		token    string
		opts     TokenReviewOptions
		want     Identity
		err      error
		errText  string
		sars     int32
		reviews  int32
		checkSAR func(t *testing.T, spec authorizationv1.SubjectAccessReviewSpec)
	}{
		{name: "edge", token: tokEdgeA, want: Identity{Kind: KindEdge, Namespace: "team-a", Name: "edge/team-a"}, reviews: 1},
		{name: "edge ServiceAccount without the audience", token: tokEdgeNoAud, err: ErrUnknown, errText: "without the audience", reviews: 2},
		{name: "another ServiceAccount with the audience", token: tokOtherSA, err: ErrUnknown, errText: `belongs to "system:serviceaccount:team-a:default"`, reviews: 2},
		{name: "edge ServiceAccount, wrong audience", token: tokWrongAud, err: ErrUnknown, errText: "does not authenticate", reviews: 2},
		{name: "admin by group", token: tokGroupAdmin, opts: TokenReviewOptions{AdminGroups: []string{adminGroup}},
			want: Identity{Kind: KindAdmin, Name: "admin/alice"}, reviews: 2},
		{name: "group not configured: RBAC decides", token: tokGroupAdmin, err: ErrForbidden, errText: `"alice" may not use the admin API`, sars: 1, reviews: 2},
		{name: "admin by RBAC", token: tokRBACAdmin, want: Identity{Kind: KindAdmin, Name: "admin/bob"}, sars: 1, reviews: 2,
			checkSAR: func(t *testing.T, spec authorizationv1.SubjectAccessReviewSpec) {
				want := user("bob")
				if spec.User != "bob" || spec.UID != want.UID || !slices.Equal(spec.Groups, want.Groups) ||
					!slices.Equal(spec.Extra["example.org/team"], []string{"platform"}) {
					t.Errorf("SAR spec %+v, want user, uid, groups and extra of %+v", spec, want)
				}
			}},
		{name: "denied", token: tokDenied, err: ErrForbidden, errText: "verb \"use\" on resource \"adminapi\"", sars: 1, reviews: 2},
		{name: "unknown token", token: tokUnknown, err: ErrUnknown, reviews: 2},
		{name: "admin token for our audience", token: tokForUsAdmin, opts: TokenReviewOptions{AdminAudiences: []string{edgeAudience}},
			want: Identity{Kind: KindAdmin, Name: "admin/dave"}, sars: 1, reviews: 1},
		{name: "admin audiences enforced", token: tokRBACAdmin, opts: TokenReviewOptions{AdminAudiences: []string{edgeAudience}},
			err: ErrUnknown, reviews: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeAPI()
			r, _ := newTestReview(t, f, tc.opts)
			id, err := r.Authenticate(t.Context(), tc.token)
			if !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if err != nil && !strings.Contains(err.Error(), tc.errText) {
				t.Errorf("err = %q, want it to say %q", err, tc.errText)
			}
			if id != tc.want {
				t.Errorf("identity %+v, want %+v", id, tc.want)
			}
			if got := f.reviews.Load(); got != tc.reviews {
				t.Errorf("%d TokenReviews, want %d", got, tc.reviews)
			}
			if got := f.sars.Load(); got != tc.sars {
				t.Errorf("%d SubjectAccessReviews, want %d", got, tc.sars)
			}
			if tc.checkSAR != nil {
				f.mu.Lock()
				spec := f.lastSAR
				f.mu.Unlock()
				tc.checkSAR(t, spec)
			}
		})
	}
}

func TestTokenReviewAudiencesAsked(t *testing.T) {
	t.Parallel()
	f := newFakeAPI()
	var asked [][]string
	f.spyToken = func(spec authenticationv1.TokenReviewSpec) { asked = append(asked, spec.Audiences) }
	r, _ := newTestReview(t, f, TokenReviewOptions{})
	if _, err := r.Authenticate(t.Context(), tokRBACAdmin); err != nil {
		t.Fatal(err)
	}
	if len(asked) != 2 || !slices.Equal(asked[0], []string{edgeAudience}) || len(asked[1]) != 0 {
		t.Fatalf("audiences asked %q, want [[%s] []]", asked, edgeAudience)
	}
}

func TestTokenReviewApiserverDown(t *testing.T) {
	t.Parallel()
	for _, failing := range []string{"tokenreviews", "subjectaccessreviews"} {
		t.Run(failing, func(t *testing.T) {
			t.Parallel()
			f := newFakeAPI()
			down := apierrors.NewServiceUnavailable("etcd is gone")
			f.client.PrependReactor("create", failing, func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, down })
			r, _ := newTestReview(t, f, TokenReviewOptions{})
			_, err := r.Authenticate(t.Context(), tokRBACAdmin)
			if !errors.Is(err, ErrUnavailable) || !errors.Is(err, down) {
				t.Fatalf("err = %v, want ErrUnavailable wrapping the apiserver's error", err)
			}
			// An outage is not remembered: the next call asks again.
			f.client.ReactionChain = f.client.ReactionChain[1:]
			if id, err := r.Authenticate(t.Context(), tokRBACAdmin); err != nil || id.Kind != KindAdmin {
				t.Fatalf("after the outage: %+v, %v", id, err)
			}
		})
	}
}

func TestTokenReviewCache(t *testing.T) {
	t.Parallel()
	var (
		mu  sync.Mutex
		now = time.Unix(1_700_000_000, 0)
	)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	f := newFakeAPI()
	jwt := fakeJWT(now.Add(20 * time.Second))
	f.tokens[jwt] = fakeToken{sa("team-b", kubecontract.EdgeName), []string{edgeAudience}}
	r, _ := newTestReview(t, f, TokenReviewOptions{Now: clock, CacheTTL: time.Minute, NegativeCacheTTL: 5 * time.Second})
	calls := func() int32 { return f.reviews.Load() + f.sars.Load() }
	auth := func(token string) error {
		t.Helper()
		_, err := r.Authenticate(t.Context(), token)
		return err
	}

	// A success is reused: no second call to the apiserver.
	if err := auth(tokRBACAdmin); err != nil {
		t.Fatal(err)
	}
	before := calls()
	if err := auth(tokRBACAdmin); err != nil {
		t.Fatal(err)
	}
	if calls() != before {
		t.Fatalf("a cached token was reviewed again (%d calls, want %d)", calls(), before)
	}
	// A refusal is reused for NegativeCacheTTL only.
	if err := auth(tokDenied); !errors.Is(err, ErrForbidden) {
		t.Fatal(err)
	}
	before = calls()
	if err := auth(tokDenied); !errors.Is(err, ErrForbidden) || calls() != before {
		t.Fatalf("refusal not cached: %v, %d calls", err, calls()-before)
	}
	// The token's own expiry bounds a success.
	if err := auth(jwt); err != nil {
		t.Fatal(err)
	}
	advance(6 * time.Second)
	before = calls()
	if err := auth(tokDenied); !errors.Is(err, ErrForbidden) || calls() == before {
		t.Fatalf("refusal cached past NegativeCacheTTL: %v", err)
	}
	before = calls()
	if err := auth(jwt); err != nil || calls() != before {
		t.Fatalf("JWT within its expiry: %v, %d calls", err, calls()-before)
	}
	advance(15 * time.Second) // 21 s: past the JWT's exp, within CacheTTL
	before = calls()
	if err := auth(jwt); err != nil || calls() == before {
		t.Fatalf("JWT reused past its exp claim: %v", err)
	}
	advance(time.Minute) // past CacheTTL
	before = calls()
	if err := auth(tokRBACAdmin); err != nil || calls() == before {
		t.Fatalf("success reused past CacheTTL: %v", err)
	}
}

func TestTokenReviewCacheIsBounded(t *testing.T) {
	t.Parallel()
	f := newFakeAPI()
	r, _ := newTestReview(t, f, TokenReviewOptions{CacheSize: 2})
	for _, tok := range []string{tokEdgeA, tokRBACAdmin, tokDenied, tokUnknown} {
		_, _ = r.Authenticate(t.Context(), tok)
		if n := r.cache.size(); n > 2 {
			t.Fatalf("%d cached results, bound 2", n)
		}
	}
}

func TestTokenReviewSharesConcurrentLookups(t *testing.T) {
	t.Parallel()
	f := newFakeAPI()
	release := make(chan struct{})
	f.block, f.entered = release, make(chan struct{}, 16)
	r, _ := newTestReview(t, f, TokenReviewOptions{})

	// A caller that gives up does not fail the review the others wait for.
	impatient, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { _, err := r.Authenticate(impatient, tokEdgeA); done <- err }()
	<-f.entered
	cancel()
	if err := <-done; !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: %v", err)
	}

	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			id, err := r.Authenticate(t.Context(), tokEdgeA)
			if err == nil && id.Namespace != "team-a" {
				err = fmt.Errorf("identity %+v", id)
			}
			errs <- err
		})
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := f.reviews.Load(); got != 1 {
		t.Fatalf("%d TokenReviews for one token, want 1 shared", got)
	}
}

func TestTokenReviewNeverLogsTokens(t *testing.T) {
	t.Parallel()
	f := newFakeAPI()
	r, logs := newTestReview(t, f, TokenReviewOptions{AdminGroups: []string{adminGroup}})
	tokens := []string{tokEdgeA, tokEdgeNoAud, tokOtherSA, tokWrongAud, tokGroupAdmin, tokRBACAdmin, tokDenied, tokUnknown, tokEchoedInErr}
	var errTexts []string
	for _, tok := range tokens {
		if _, err := r.Authenticate(t.Context(), tok); err != nil {
			errTexts = append(errTexts, err.Error())
		}
	}
	f.mu.Lock()
	f.fail = errors.New("connection refused")
	f.mu.Unlock()
	if _, err := r.Authenticate(t.Context(), "tok-during-outage-0000"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("outage: %v", err)
	} else {
		errTexts = append(errTexts, err.Error())
	}
	out := logs.String()
	if !strings.Contains(out, "admin refused") || !strings.Contains(out, "token reviewed") {
		t.Fatalf("expected review lines in the log:\n%s", out)
	}
	for _, tok := range append(tokens, "tok-during-outage-0000") {
		if strings.Contains(out, tok) {
			t.Errorf("the log contains token %q:\n%s", tok, out)
		}
		for _, e := range errTexts {
			if strings.Contains(e, tok) {
				t.Errorf("an error contains token %q: %s", tok, e)
			}
		}
	}
}

func TestNewTokenReviewNeedsAudience(t *testing.T) {
	t.Parallel()
	if _, err := NewTokenReview(fake.NewClientset(), TokenReviewOptions{}); err == nil {
		t.Fatal("no error without EdgeAudience")
	}
}

func TestTokenExpiry(t *testing.T) {
	t.Parallel()
	exp := time.Unix(1_800_000_000, 0)
	tests := map[string]struct {
		token string
		want  time.Time
	}{
		"jwt":          {fakeJWT(exp), exp},
		"not a jwt":    {"opaque-static-token", time.Time{}},
		"bad base64":   {"a.!!!.c", time.Time{}},
		"no exp":       {"a." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"x"}`)) + ".c", time.Time{}},
		"exp a string": {"a." + base64.RawURLEncoding.EncodeToString([]byte(`{"exp":"soon"}`)) + ".c", time.Time{}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if got := tokenExpiry(tc.token); !got.Equal(tc.want) {
				t.Fatalf("tokenExpiry = %v, want %v", got, tc.want)
			}
		})
	}
}

// fakeJWT has the shape of a JWT with an exp claim; only the fake
// apiserver "verifies" it.
func fakeJWT(exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"ES256"}`)) + "." + enc(fmt.Appendf(nil, `{"aud":["%s"],"exp":%d}`, edgeAudience, exp.Unix())) + ".c2lnbmF0dXJl"
}

// funcAuthenticator answers with a fixed result.
type funcAuthenticator func(ctx context.Context, token string) (Identity, error)

func (f funcAuthenticator) Authenticate(ctx context.Context, token string) (Identity, error) {
	return f(ctx, token)
}

func TestChain(t *testing.T) {
	t.Parallel()
	static, err := NewStaticTokens([]string{"static-admin-000000"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	down := funcAuthenticator(func(context.Context, string) (Identity, error) {
		return Identity{}, fmt.Errorf("%w: apiserver down", ErrUnavailable)
	})
	c := Chain(static, down)
	if id, err := c.Authenticate(t.Context(), "static-admin-000000"); err != nil || id.Kind != KindAdmin {
		t.Fatalf("static admin while the apiserver is down: %+v, %v", id, err)
	}
	if _, err := c.Authenticate(t.Context(), "other-token-000000"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("unknown to the first, outage in the second: %v", err)
	}
	if _, err := Chain(static).Authenticate(t.Context(), "other-token-000000"); !errors.Is(err, ErrUnknown) {
		t.Fatalf("unknown to all: %v", err)
	}
}
