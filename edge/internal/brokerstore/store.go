// Package brokerstore is the edge's blob.Store over the control plane's
// StorageBrokerService. An edge runs in its tenant's namespace, so any
// storage key it held its tenant would hold too: instead it holds none. It
// asks the control plane for one object at a time (Authorize, in the scope
// of the pull that needs it), reads the object with the short-lived
// presigned URL the answer carries, and streams what it stores through the
// control plane (PutObject), which verifies the digest before anything
// becomes visible.
//
// A refusal is blob.ErrDenied, which the cache treats as a miss (it fetches
// from the upstream with the edge's own credentials) or as "serve without
// caching"; an unreachable control plane is a plain error, a storage fault.
//
// An edge started with --storage=control-plane is built with a Deferred:
// the Store behind a switch that stays off until the control plane's
// configuration brings storage.brokered.
package brokerstore

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// Store is a blob.Store whose every operation goes through the storage
// broker. It is not a blob.Spooler or blob.FilePutter: the cache spools
// fills in its own spool directory and streams them here.
type Store struct {
	client   selfhostv1.StorageBrokerServiceClient
	http     *http.Client
	log      *slog.Logger
	now      func() time.Time
	grants   *grantCache
	grantTTL time.Duration
}

var _ blob.Store = (*Store)(nil)

// Option configures a Store.
type Option func(*Store)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(s *Store) { s.log = l } }

// WithClock replaces time.Now (tests of grant expiry).
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// WithGrantTTL sets how long a grant is reused before the broker is asked
// again (default and most: DefaultGrantTTL).
func WithGrantTTL(d time.Duration) Option {
	return func(s *Store) { s.grantTTL = min(d, DefaultGrantTTL) }
}

const (
	// DefaultGrantTTL bounds how long a grant (presigned URL, size, type)
	// is reused. Short on purpose: a revoked access stops being served
	// within the broker's proof TTL plus this.
	DefaultGrantTTL = time.Minute
	// grantMargin is kept between a reused grant and its URL's expiry, so
	// a transfer that starts with it does not run into the expiry.
	grantMargin = 30 * time.Second
	// maxGrants bounds the grant cache.
	maxGrants = 1024
	// chunkSize is the size of one PutObject data message.
	chunkSize = 256 << 10
)

// New returns a Store that asks client for access and reads presigned URLs
// with httpClient (nil: http.DefaultClient).
func New(client selfhostv1.StorageBrokerServiceClient, httpClient *http.Client, opts ...Option) *Store {
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	s := &Store{client: client, http: httpClient, log: slog.New(slog.DiscardHandler), now: time.Now, grantTTL: DefaultGrantTTL}
	for _, o := range opts {
		o(s)
	}
	s.grants = newGrantCache(maxGrants)
	return s
}

// isRecord reports whether key is one of a namespace's own records, which
// the broker grants without a scope.
func isRecord(key string) bool { return strings.HasPrefix(key, "tenants/") }

// scopeFor returns the scope to ask in: nil for records, the context's for
// shared objects, which need one.
func scopeFor(ctx context.Context, op, key string) (*selfhostv1.ObjectScope, error) {
	if !blob.ValidKey(key) {
		return nil, fmt.Errorf("broker %s %q: %w", op, key, blob.ErrInvalidKey)
	}
	if isRecord(key) {
		return nil, nil
	}
	prefix, repo, ok := blob.ScopeFrom(ctx)
	if !ok {
		// The broker would refuse it: say so without a round trip.
		return nil, fmt.Errorf("broker %s %s: no pull scope to ask in: %w", op, key, blob.ErrDenied)
	}
	return &selfhostv1.ObjectScope{Prefix: prefix, Repository: repo}, nil
}

// grantFor returns a reusable grant for key in scope, or asks the broker.
func (s *Store) grantFor(ctx context.Context, op, key string, scope *selfhostv1.ObjectScope) (grant, error) {
	if g, ok := s.grants.get(grantID(key, scope), s.now()); ok {
		return g, nil
	}
	return s.authorize(ctx, op, key, scope)
}

// authorize asks the broker and keeps the grant of an existing object.
func (s *Store) authorize(ctx context.Context, op, key string, scope *selfhostv1.ObjectScope) (grant, error) {
	resp, err := s.client.Authorize(ctx, &selfhostv1.AuthorizeRequest{Key: key, Scope: scope})
	if err != nil {
		return grant{}, rpcErr(ctx, op, key, err)
	}
	if !resp.GetExists() {
		return grant{}, fmt.Errorf("broker %s %s: %w", op, key, blob.ErrNotFound)
	}
	g := grant{key: key, url: resp.GetUrl(), size: resp.GetSize(), contentType: resp.GetContentType(),
		modTime: resp.GetModTime().AsTime()}
	now := s.now()
	g.until = now.Add(s.grantTTL)
	if exp := resp.GetExpires(); exp != nil {
		g.until = minTime(g.until, exp.AsTime().Add(-grantMargin))
	}
	if g.until.After(now) {
		s.grants.put(grantID(key, scope), g, now)
	}
	return g, nil
}

// Stat implements blob.Store.
func (s *Store) Stat(ctx context.Context, key string) (blob.Info, error) {
	scope, err := scopeFor(ctx, "stat", key)
	if err != nil {
		return blob.Info{}, err
	}
	g, err := s.grantFor(ctx, "stat", key, scope)
	if err != nil {
		return blob.Info{}, err
	}
	return blob.Info{Size: g.size, ContentType: blob.ContentTypeOr(g.contentType), ModTime: g.modTime}, nil
}

// Put implements blob.Store: one of the namespace's own records, in one
// data message.
func (s *Store) Put(ctx context.Context, key string, data []byte, contentType string) error {
	scope, err := scopeFor(ctx, "put", key)
	if err != nil {
		return err
	}
	defer s.grants.drop(key)
	stream, err := s.client.PutObject(ctx)
	if err != nil {
		return rpcErr(ctx, "put", key, err)
	}
	hdr := &selfhostv1.PutObjectHeader{Key: key, Scope: scope, Size: int64(len(data)), ContentType: contentType}
	msgs := []*selfhostv1.PutObjectRequest{
		{Part: &selfhostv1.PutObjectRequest_Header{Header: hdr}},
		{Part: &selfhostv1.PutObjectRequest_Data{Data: data}},
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			// io.EOF: the broker ended the stream; its status says why.
			break
		}
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return rpcErr(ctx, "put", key, err)
	}
	return nil
}

// Delete implements blob.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	if !blob.ValidKey(key) {
		return fmt.Errorf("broker delete %q: %w", key, blob.ErrInvalidKey)
	}
	defer s.grants.drop(key)
	if _, err := s.client.DeleteObject(ctx, &selfhostv1.DeleteObjectRequest{Key: key}); err != nil {
		return rpcErr(ctx, "delete", key, err)
	}
	return nil
}

// List implements blob.Store, page by page.
func (s *Store) List(ctx context.Context, prefix string, fn func(key string, info blob.Info) error) error {
	if !blob.ValidPrefix(prefix) {
		return fmt.Errorf("broker list %q: %w", prefix, blob.ErrInvalidKey)
	}
	token := ""
	for {
		resp, err := s.client.ListObjects(ctx, &selfhostv1.ListObjectsRequest{Prefix: prefix, PageToken: token})
		if err != nil {
			return rpcErr(ctx, "list", prefix, err)
		}
		for _, o := range resp.GetObjects() {
			if err := fn(o.GetKey(), blob.Info{Size: o.GetSize(), ModTime: o.GetModTime().AsTime()}); err != nil {
				return err
			}
		}
		if token = resp.GetNextPageToken(); token == "" {
			return nil
		}
	}
}

// reasonDigestMismatch is the broker's ErrorInfo reason for an upload that
// does not hash to its name.
const reasonDigestMismatch = "DIGEST_MISMATCH"

// rpcErr maps a broker error onto the blob sentinels: a refusal is
// ErrDenied, a digest mismatch ErrVerify, a missing object ErrNotFound,
// the caller's own cancellation its context error; anything else
// (unavailable, deadline, authentication) stays a plain error, which the
// cache counts as a storage fault.
func rpcErr(ctx context.Context, op, key string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("broker %s %s: %w", op, key, cerr)
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("broker %s %s: %w", op, key, err)
	}
	switch st.Code() {
	case codes.PermissionDenied:
		return fmt.Errorf("broker %s %s: %s: %w", op, key, st.Message(), blob.ErrDenied)
	case codes.NotFound:
		return fmt.Errorf("broker %s %s: %w", op, key, blob.ErrNotFound)
	case codes.InvalidArgument:
		if hasReason(st, reasonDigestMismatch) {
			return fmt.Errorf("broker %s %s: %s: %w", op, key, st.Message(), blob.ErrVerify)
		}
		// Refused as malformed (a key or scope the broker does not
		// accept): a refusal too, not a storage fault.
		return fmt.Errorf("broker %s %s: %s: %w", op, key, st.Message(), blob.ErrDenied)
	case codes.Canceled:
		return fmt.Errorf("broker %s %s: %s: %w", op, key, st.Message(), context.Canceled)
	}
	return fmt.Errorf("broker %s %s: %w", op, key, err)
}

func hasReason(st *status.Status, reason string) bool {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == reason {
			return true
		}
	}
	return false
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// emptyBody is an object range with no bytes.
type emptyBody struct{}

func (emptyBody) Read([]byte) (int, error) { return 0, io.EOF }
func (emptyBody) Close() error             { return nil }
