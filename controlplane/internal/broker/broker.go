// Package broker serves StorageBrokerService: the only way an edge reaches
// the shared storage. Edges run in their tenants' namespaces and hold no
// storage credentials; the broker, on the trusted side, checks every object
// against the caller's namespace (taken from its token) and hands out one
// presigned GET at a time, and it stores what edges upload only after it
// has verified the digest itself. A namespace can therefore read shared
// content only with a proof of upstream access (package proof), write
// nothing but content that hashes to its name, and touch no other
// namespace's records.
package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/auth"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/proof"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// Prover decides access to shared content (package proof).
type Prover interface {
	Manifest(ctx context.Context, namespace, prefix, repository string, d oci.Digest) (proof.Access, error)
	Blob(ctx context.Context, namespace, prefix, repository string, d oci.Digest) (proof.Access, error)
}

// Reasons in the ErrorInfo of a refusal.
const (
	ReasonNoProof         = "NO_PROOF"
	ReasonOtherNamespace  = "OTHER_NAMESPACE"
	ReasonUnknownUpstream = "UNKNOWN_UPSTREAM"
	ReasonInvalidKey      = "INVALID_KEY"
	ReasonDigestMismatch  = "DIGEST_MISMATCH"
	errorDomain           = "k8s-selfhost-repo.io"
)

const (
	// DefaultURLTTL is how long a presigned GET works. Edges keep a grant
	// for a minute at most; the rest covers a slow transfer's retries.
	DefaultURLTTL = 15 * time.Minute
	// MaxRecordBytes bounds a namespace's own record (a tag record is
	// ~200 bytes).
	MaxRecordBytes = 64 << 10
	// listPageSize bounds one ListObjects page.
	listPageSize = 1000
)

// Server implements selfhostv1.StorageBrokerServiceServer.
type Server struct {
	selfhostv1.UnimplementedStorageBrokerServiceServer
	store  blob.PresigningStore
	prover Prover
	log    *slog.Logger
	urlTTL time.Duration
	now    func() time.Time
}

// New returns a broker over store.
func New(store blob.PresigningStore, prover Prover, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{store: store, prover: prover, log: log, urlTTL: DefaultURLTTL, now: time.Now}
}

// object is a parsed storage key.
type object struct {
	key    string
	kind   string // "blob", "manifest" or "record"
	digest oci.Digest
}

// parseKey classifies key for the calling namespace. Shared objects must be
// named by a valid digest; records must be the namespace's own.
func parseKey(key, namespace string) (object, error) {
	if !blob.ValidKey(key) {
		return object{}, refuse(codes.InvalidArgument, ReasonInvalidKey, "key %q is not a storage key", key)
	}
	parts := strings.SplitN(key, "/", 3)
	switch {
	case len(parts) == 3 && (parts[0] == "blobs" || parts[0] == "manifests"):
		d, err := oci.ParseDigest(parts[1] + ":" + parts[2])
		if err != nil {
			return object{}, refuse(codes.InvalidArgument, ReasonInvalidKey, "key %q: %v", key, err)
		}
		return object{key: key, kind: strings.TrimSuffix(parts[0], "s"), digest: d}, nil
	case len(parts) == 3 && parts[0] == "tenants":
		if parts[1] != namespace {
			return object{}, refuse(codes.PermissionDenied, ReasonOtherNamespace, "key %q belongs to another namespace", key)
		}
		return object{key: key, kind: "record"}, nil
	}
	return object{}, refuse(codes.PermissionDenied, ReasonInvalidKey, "key %q is outside what edges may reach", key)
}

// caller returns the namespace of the authenticated edge.
func caller(ctx context.Context) (string, error) {
	id, ok := auth.FromContext(ctx)
	if !ok || id.Kind != auth.KindEdge || id.Namespace == "" {
		return "", status.Error(codes.PermissionDenied, "an edge token is required")
	}
	return id.Namespace, nil
}

// check grants obj to namespace in scope, or returns the refusal.
func (s *Server) check(ctx context.Context, namespace string, obj object, scope *selfhostv1.ObjectScope) (selfhostv1.Access, error) {
	if obj.kind == "record" {
		return selfhostv1.Access_ACCESS_OWN, nil
	}
	prefix, repo := scope.GetPrefix(), scope.GetRepository()
	if prefix == "" || strings.ContainsAny(prefix, "/.\\") || !oci.ValidRepository(repo) {
		return 0, refuse(codes.InvalidArgument, ReasonInvalidKey, "scope: a valid upstream prefix and repository are required for %s", obj.key)
	}
	var a proof.Access
	var err error
	if obj.kind == "manifest" {
		a, err = s.prover.Manifest(ctx, namespace, prefix, repo, obj.digest)
	} else {
		a, err = s.prover.Blob(ctx, namespace, prefix, repo, obj.digest)
	}
	switch {
	case err == nil && a == proof.Public:
		return selfhostv1.Access_ACCESS_PUBLIC, nil
	case err == nil && a == proof.Namespace:
		return selfhostv1.Access_ACCESS_NAMESPACE, nil
	case errors.Is(err, proof.ErrUnknownUpstream):
		return 0, refuse(codes.PermissionDenied, ReasonUnknownUpstream, "upstream %q is not one namespace %s may use", prefix, namespace)
	case errors.Is(err, proof.ErrUnavailable):
		return 0, status.Errorf(codes.Unavailable, "%s %s in %s/%s: the upstream cannot be asked and nothing proves access", obj.kind, obj.digest, prefix, repo)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return 0, status.FromContextError(err).Err()
	}
	s.log.Info("shared object refused", "namespace", namespace, "key", obj.key, "prefix", prefix, "repository", repo, "err", err)
	return 0, refuse(codes.PermissionDenied, ReasonNoProof, "%s %s: namespace %s has no proof of access in %s/%s", obj.kind, obj.digest, namespace, prefix, repo)
}

// Authorize implements selfhostv1.StorageBrokerServiceServer.
func (s *Server) Authorize(ctx context.Context, req *selfhostv1.AuthorizeRequest) (*selfhostv1.AuthorizeResponse, error) {
	ns, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	obj, err := parseKey(req.GetKey(), ns)
	if err != nil {
		return nil, err
	}
	access, err := s.check(ctx, ns, obj, req.GetScope())
	if err != nil {
		return nil, err
	}
	info, err := s.store.Stat(ctx, obj.key)
	if errors.Is(err, blob.ErrNotFound) {
		return &selfhostv1.AuthorizeResponse{Exists: false, Access: access}, nil
	}
	if err != nil {
		s.log.Warn("storage stat failed", "key", obj.key, "err", err)
		return nil, status.Errorf(codes.Unavailable, "storage: stat %s failed", obj.key)
	}
	url, expires, err := s.store.Presign(ctx, obj.key, s.urlTTL)
	if err != nil {
		s.log.Warn("presign failed", "key", obj.key, "err", err)
		return nil, status.Errorf(codes.Unavailable, "storage: cannot sign a read of %s", obj.key)
	}
	return &selfhostv1.AuthorizeResponse{Exists: true, Size: info.Size, ContentType: info.ContentType,
		ModTime: timestamppb.New(info.ModTime), Url: url, Expires: timestamppb.New(expires), Access: access}, nil
}

// DeleteObject implements selfhostv1.StorageBrokerServiceServer.
func (s *Server) DeleteObject(ctx context.Context, req *selfhostv1.DeleteObjectRequest) (*selfhostv1.DeleteObjectResponse, error) {
	ns, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	obj, err := parseKey(req.GetKey(), ns)
	if err != nil {
		return nil, err
	}
	if obj.kind != "record" {
		return nil, refuse(codes.PermissionDenied, ReasonOtherNamespace, "%s is shared: edges may delete only their namespace's records", obj.key)
	}
	if err := s.store.Delete(ctx, obj.key); err != nil {
		s.log.Warn("storage delete failed", "key", obj.key, "err", err)
		return nil, status.Errorf(codes.Unavailable, "storage: delete %s failed", obj.key)
	}
	return &selfhostv1.DeleteObjectResponse{}, nil
}

// ListObjects implements selfhostv1.StorageBrokerServiceServer. Keys are
// listed in full and paged by the last key returned.
func (s *Server) ListObjects(ctx context.Context, req *selfhostv1.ListObjectsRequest) (*selfhostv1.ListObjectsResponse, error) {
	ns, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	own := "tenants/" + ns + "/"
	prefix := req.GetPrefix()
	if !strings.HasPrefix(prefix, own) || !blob.ValidPrefix(prefix) {
		return nil, refuse(codes.PermissionDenied, ReasonOtherNamespace, "prefix %q: edges may list only %s", prefix, own)
	}
	var out []*selfhostv1.ListedObject
	after := req.GetPageToken()
	err = s.store.List(ctx, prefix, func(key string, info blob.Info) error {
		if key > after {
			out = append(out, &selfhostv1.ListedObject{Key: key, Size: info.Size, ModTime: timestamppb.New(info.ModTime)})
		}
		return nil
	})
	if err != nil {
		s.log.Warn("storage list failed", "prefix", prefix, "err", err)
		return nil, status.Errorf(codes.Unavailable, "storage: list %s failed", prefix)
	}
	sortListed(out)
	resp := &selfhostv1.ListObjectsResponse{Objects: out}
	if len(out) > listPageSize {
		resp.Objects = out[:listPageSize]
		resp.NextPageToken = out[listPageSize-1].GetKey()
	}
	return resp, nil
}

// PutObject implements selfhostv1.StorageBrokerServiceServer.
func (s *Server) PutObject(stream selfhostv1.StorageBrokerService_PutObjectServer) error {
	ctx := stream.Context()
	ns, err := caller(ctx)
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "put: no header: %v", err)
	}
	h := first.GetHeader()
	if h == nil {
		return status.Error(codes.InvalidArgument, "put: the first message must be the header")
	}
	obj, err := parseKey(h.GetKey(), ns)
	if err != nil {
		return err
	}
	if obj.kind == "record" {
		return s.putRecord(stream, obj)
	}
	d, err := oci.ParseDigest(h.GetDigest())
	if err != nil || d != obj.digest {
		return refuse(codes.InvalidArgument, ReasonDigestMismatch, "put %s: header digest %q does not name the key", obj.key, h.GetDigest())
	}
	want := blob.Expect{Digest: d, Size: h.GetSize(), ContentType: h.GetContentType()}
	if obj.kind == "manifest" {
		if !oci.IsManifestMediaType(want.ContentType) {
			return refuse(codes.InvalidArgument, ReasonInvalidKey, "put %s: content type %q is not an OCI or Docker manifest type", obj.key, want.ContentType)
		}
		if want.Size < 0 || want.Size > oci.MaxManifestSize {
			return refuse(codes.InvalidArgument, ReasonInvalidKey, "put %s: a manifest needs its size, at most %d bytes", obj.key, oci.MaxManifestSize)
		}
	} else {
		want.ContentType = ""
		if want.Size < -1 {
			return status.Errorf(codes.InvalidArgument, "put %s: size %d", obj.key, want.Size)
		}
	}
	if _, err := s.check(ctx, ns, obj, h.GetScope()); err != nil {
		return err
	}
	if _, err := s.store.Stat(ctx, obj.key); err == nil {
		// Content addressed: what is there already is these bytes.
		return s.drain(stream, obj, want)
	}
	return s.write(stream, obj, want)
}

func (s *Server) write(stream selfhostv1.StorageBrokerService_PutObjectServer, obj object, want blob.Expect) error {
	ctx := stream.Context()
	w, err := s.store.Create(ctx, obj.key, want)
	if err != nil {
		s.log.Warn("storage create failed", "key", obj.key, "err", err)
		return status.Errorf(codes.Unavailable, "storage: cannot write %s", obj.key)
	}
	defer func() { _ = w.Abort(context.WithoutCancel(ctx)) }()
	var n int64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return status.Errorf(codes.Canceled, "put %s: upload ended after %d bytes: %v", obj.key, n, err)
		}
		data := msg.GetData()
		if want.Size >= 0 && n+int64(len(data)) > want.Size {
			return refuse(codes.InvalidArgument, ReasonDigestMismatch, "put %s: more than the announced %d bytes", obj.key, want.Size)
		}
		if _, err := w.Write(data); err != nil {
			s.log.Warn("storage write failed", "key", obj.key, "err", err)
			return status.Errorf(codes.Unavailable, "storage: write %s failed", obj.key)
		}
		n += int64(len(data))
	}
	if err := w.Commit(ctx); err != nil {
		if errors.Is(err, blob.ErrVerify) {
			s.log.Warn("upload refused: content does not match its digest", "key", obj.key, "bytes", n)
			return refuse(codes.InvalidArgument, ReasonDigestMismatch, "put %s: the content does not match its digest and size", obj.key)
		}
		s.log.Warn("storage commit failed", "key", obj.key, "err", err)
		return status.Errorf(codes.Unavailable, "storage: commit %s failed", obj.key)
	}
	return stream.SendAndClose(&selfhostv1.PutObjectResponse{Size: n})
}

// drain reads an upload of content that is already stored, still
// verifying it, so a caller cannot tell "stored" from "verified" apart by
// sending garbage.
func (s *Server) drain(stream selfhostv1.StorageBrokerService_PutObjectServer, obj object, want blob.Expect) error {
	h := want.Digest.Hash()
	var n int64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return status.Errorf(codes.Canceled, "put %s: upload ended: %v", obj.key, err)
		}
		h.Write(msg.GetData())
		n += int64(len(msg.GetData()))
	}
	if !want.Digest.Matches(h) || (want.Size >= 0 && n != want.Size) {
		return refuse(codes.InvalidArgument, ReasonDigestMismatch, "put %s: the content does not match its digest and size", obj.key)
	}
	return stream.SendAndClose(&selfhostv1.PutObjectResponse{Size: n})
}

// putRecord stores one of the namespace's own records. A tag record's times
// are clamped to now: a record "checked in 2099" would never be
// revalidated.
func (s *Server) putRecord(stream selfhostv1.StorageBrokerService_PutObjectServer, obj object) error {
	var data []byte
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return status.Errorf(codes.Canceled, "put %s: %v", obj.key, err)
		}
		data = append(data, msg.GetData()...)
		if len(data) > MaxRecordBytes {
			return status.Errorf(codes.InvalidArgument, "put %s: a record is at most %d bytes", obj.key, MaxRecordBytes)
		}
	}
	data, err := clampTimes(data, s.now())
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "put %s: %v", obj.key, err)
	}
	if err := s.store.Put(stream.Context(), obj.key, data, "application/json"); err != nil {
		s.log.Warn("storage put failed", "key", obj.key, "err", err)
		return status.Errorf(codes.Unavailable, "storage: put %s failed", obj.key)
	}
	return stream.SendAndClose(&selfhostv1.PutObjectResponse{Size: int64(len(data))})
}

// clampTimes rewrites the RFC 3339 times of a JSON object record that lie in
// the future to now. Records must be JSON objects.
func clampTimes(data []byte, now time.Time) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("a record must be a JSON object: %w", err)
	}
	changed := false
	for _, field := range []string{"fetchedAt", "lastChecked"} {
		raw, ok := m[field]
		if !ok {
			continue
		}
		var t time.Time
		if err := json.Unmarshal(raw, &t); err != nil {
			return nil, fmt.Errorf("field %s: %w", field, err)
		}
		if t.After(now) {
			b, _ := json.Marshal(now.UTC())
			m[field] = b
			changed = true
		}
	}
	if !changed {
		return data, nil
	}
	return json.Marshal(m)
}

// refuse builds a status with an ErrorInfo reason.
func refuse(code codes.Code, reason, format string, args ...any) error {
	st := status.Newf(code, format, args...)
	if withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: errorDomain}); err == nil {
		st = withInfo
	}
	return st.Err()
}

func sortListed(objs []*selfhostv1.ListedObject) {
	slices.SortFunc(objs, func(a, b *selfhostv1.ListedObject) int { return strings.Compare(a.GetKey(), b.GetKey()) })
}
