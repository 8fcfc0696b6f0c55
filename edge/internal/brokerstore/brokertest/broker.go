// Package brokertest is a small StorageBrokerService for the edge's tests:
// it grants every object except in the scopes a test denies, over a real
// store that presigns reads (the S3 store against versitygw, or FSStorage).
// The control plane's real broker, with its proofs of upstream access, is
// tested in the control plane and end to end; this lets the edge's side be
// tested on its own.
package brokertest

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// ListPage is the fake's page size: small, so listings span pages.
const ListPage = 2

// Broker is the fake service.
type Broker struct {
	selfhostv1.UnimplementedStorageBrokerServiceServer
	store blob.PresigningStore
	ttl   time.Duration

	mu     sync.Mutex
	denied map[string]bool // "prefix/repository"
	scopes []string        // of every Authorize and PutObject: "prefix/repository", "" without
	tokens []string        // authorization metadata of every call

	authorizes atomic.Int64
	down       atomic.Bool
}

// New returns a Broker over store.
func New(store blob.PresigningStore) *Broker {
	return &Broker{store: store, ttl: 15 * time.Minute, denied: map[string]bool{}}
}

// Register adds the service to s (before it serves).
func (b *Broker) Register(s *grpc.Server) { selfhostv1.RegisterStorageBrokerServiceServer(s, b) }

// Deny refuses shared objects in prefix/repository from now on.
func (b *Broker) Deny(prefix, repository string) {
	b.mu.Lock()
	b.denied[prefix+"/"+repository] = true
	b.mu.Unlock()
}

// SetDown makes every call fail with UNAVAILABLE (true) or work again.
func (b *Broker) SetDown(down bool) { b.down.Store(down) }

// Authorizes is the number of Authorize calls so far.
func (b *Broker) Authorizes() int64 { return b.authorizes.Load() }

// Scopes returns the scope of every Authorize and PutObject so far.
func (b *Broker) Scopes() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.scopes)
}

// Tokens returns the authorization metadata of every call so far.
func (b *Broker) Tokens() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.tokens)
}

// Refusal builds a status with an ErrorInfo reason, as the real broker.
func Refusal(code codes.Code, reason, msg string) error {
	st, err := status.New(code, msg).WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: "brokertest"})
	if err != nil {
		return status.Error(code, msg)
	}
	return st.Err()
}

// check records the call and applies the scope rules to key.
func (b *Broker) check(ctx context.Context, key string, scope *selfhostv1.ObjectScope) error {
	b.note(ctx)
	if b.down.Load() {
		return status.Error(codes.Unavailable, "storage: down (test)")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s := ""
	if scope != nil {
		s = scope.GetPrefix() + "/" + scope.GetRepository()
	}
	b.scopes = append(b.scopes, s)
	if strings.HasPrefix(key, "tenants/") {
		return nil
	}
	if scope == nil {
		return Refusal(codes.InvalidArgument, "INVALID_KEY", "scope required for "+key)
	}
	if b.denied[s] {
		return Refusal(codes.PermissionDenied, "NO_PROOF", "no proof of access in "+s)
	}
	return nil
}

func (b *Broker) note(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	b.mu.Lock()
	b.tokens = append(b.tokens, strings.Join(md.Get("authorization"), ","))
	b.mu.Unlock()
}

// Authorize implements the service.
func (b *Broker) Authorize(ctx context.Context, req *selfhostv1.AuthorizeRequest) (*selfhostv1.AuthorizeResponse, error) {
	b.authorizes.Add(1)
	if err := b.check(ctx, req.GetKey(), req.GetScope()); err != nil {
		return nil, err
	}
	info, err := b.store.Stat(ctx, req.GetKey())
	if errors.Is(err, blob.ErrNotFound) {
		return &selfhostv1.AuthorizeResponse{Exists: false}, nil
	}
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	url, expires, err := b.store.Presign(ctx, req.GetKey(), b.ttl)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &selfhostv1.AuthorizeResponse{Exists: true, Size: info.Size, ContentType: info.ContentType,
		ModTime: timestamppb.New(info.ModTime), Url: url, Expires: timestamppb.New(expires),
		Access: selfhostv1.Access_ACCESS_PUBLIC}, nil
}

// PutObject implements the service: records (no digest) are put whole,
// anything else is written through the store's verified writer.
func (b *Broker) PutObject(stream selfhostv1.StorageBrokerService_PutObjectServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "no header: %v", err)
	}
	h := first.GetHeader()
	if h == nil {
		return status.Error(codes.InvalidArgument, "the first message must be the header")
	}
	if err := b.check(ctx, h.GetKey(), h.GetScope()); err != nil {
		return err
	}
	if h.GetDigest() == "" {
		return b.putRecord(stream, h)
	}
	d, err := oci.ParseDigest(h.GetDigest())
	if err != nil {
		return Refusal(codes.InvalidArgument, "DIGEST_MISMATCH", "bad digest")
	}
	w, err := b.store.Create(ctx, h.GetKey(), blob.Expect{Digest: d, Size: h.GetSize(), ContentType: h.GetContentType()})
	if err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	defer func() { _ = w.Abort(context.WithoutCancel(ctx)) }()
	var n int64
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err // the client cancelled: nothing is committed
		}
		if _, err := w.Write(m.GetData()); err != nil {
			return status.Error(codes.Unavailable, err.Error())
		}
		n += int64(len(m.GetData()))
	}
	if err := w.Commit(ctx); errors.Is(err, blob.ErrVerify) {
		return Refusal(codes.InvalidArgument, "DIGEST_MISMATCH", "content does not match its digest")
	} else if err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	return stream.SendAndClose(&selfhostv1.PutObjectResponse{Size: n})
}

func (b *Broker) putRecord(stream selfhostv1.StorageBrokerService_PutObjectServer, h *selfhostv1.PutObjectHeader) error {
	var data []byte
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		data = append(data, m.GetData()...)
	}
	if err := b.store.Put(stream.Context(), h.GetKey(), data, h.GetContentType()); err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	return stream.SendAndClose(&selfhostv1.PutObjectResponse{Size: int64(len(data))})
}

// DeleteObject implements the service.
func (b *Broker) DeleteObject(ctx context.Context, req *selfhostv1.DeleteObjectRequest) (*selfhostv1.DeleteObjectResponse, error) {
	b.note(ctx)
	if b.down.Load() {
		return nil, status.Error(codes.Unavailable, "storage: down (test)")
	}
	if err := b.store.Delete(ctx, req.GetKey()); err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &selfhostv1.DeleteObjectResponse{}, nil
}

// ListObjects implements the service, ListPage keys a page.
func (b *Broker) ListObjects(ctx context.Context, req *selfhostv1.ListObjectsRequest) (*selfhostv1.ListObjectsResponse, error) {
	b.note(ctx)
	if b.down.Load() {
		return nil, status.Error(codes.Unavailable, "storage: down (test)")
	}
	var all []*selfhostv1.ListedObject
	err := b.store.List(ctx, req.GetPrefix(), func(key string, info blob.Info) error {
		if key > req.GetPageToken() {
			all = append(all, &selfhostv1.ListedObject{Key: key, Size: info.Size, ModTime: timestamppb.New(info.ModTime)})
		}
		return nil
	})
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	slices.SortFunc(all, func(x, y *selfhostv1.ListedObject) int { return strings.Compare(x.GetKey(), y.GetKey()) })
	resp := &selfhostv1.ListObjectsResponse{Objects: all}
	if len(all) > ListPage {
		resp.Objects, resp.NextPageToken = all[:ListPage], all[ListPage-1].GetKey()
	}
	return resp, nil
}
