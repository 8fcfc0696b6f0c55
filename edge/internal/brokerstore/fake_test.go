package brokerstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/fs"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// fakeBroker is a small StorageBrokerService over a real filesystem store,
// with a real HTTP server answering its "presigned" URLs (random tokens
// with an expiry). It grants everything except the repositories in denied;
// the control plane's real broker and its proofs are tested there.
type fakeBroker struct {
	selfhostv1.UnimplementedStorageBrokerServiceServer
	store *fs.Store
	http  *httptest.Server
	ttl   time.Duration

	mu     sync.Mutex
	urls   map[string]string // token → key
	denied map[string]bool   // "prefix/repository"
	scopes []string          // scope of every Authorize and PutObject, "prefix/repository" or ""

	authorizes, gets atomic.Int64
	down             atomic.Bool // every RPC: UNAVAILABLE
}

// startBroker serves a fake broker on loopback and returns a Store over it.
func startBroker(t *testing.T, opts ...Option) (*fakeBroker, *Store) {
	t.Helper()
	st, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := &fakeBroker{store: st, ttl: 15 * time.Minute, urls: map[string]string{}, denied: map[string]bool{}}
	b.http = httptest.NewServer(http.HandlerFunc(b.serveURL))
	t.Cleanup(b.http.Close)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	selfhostv1.RegisterStorageBrokerServiceServer(srv, b)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return b, New(selfhostv1.NewStorageBrokerServiceClient(conn), b.http.Client(), opts...)
}

func (b *fakeBroker) deny(prefix, repo string) {
	b.mu.Lock()
	b.denied[prefix+"/"+repo] = true
	b.mu.Unlock()
}

// revokeURLs makes every URL handed out so far answer 403 (expired).
func (b *fakeBroker) revokeURLs() {
	b.mu.Lock()
	b.urls = map[string]string{}
	b.mu.Unlock()
}

func (b *fakeBroker) seenScopes() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.scopes...)
}

func refusal(code codes.Code, reason, msg string) error {
	st, _ := status.New(code, msg).WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: "test"})
	return st.Err()
}

// check applies the broker's scope rules to key.
func (b *fakeBroker) check(key string, scope *selfhostv1.ObjectScope) error {
	if b.down.Load() {
		return status.Error(codes.Unavailable, "storage: down")
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
		return refusal(codes.InvalidArgument, "INVALID_KEY", "scope required")
	}
	if b.denied[s] {
		return refusal(codes.PermissionDenied, "NO_PROOF", "no proof of access in "+s)
	}
	return nil
}

func (b *fakeBroker) Authorize(ctx context.Context, req *selfhostv1.AuthorizeRequest) (*selfhostv1.AuthorizeResponse, error) {
	b.authorizes.Add(1)
	if err := b.check(req.GetKey(), req.GetScope()); err != nil {
		return nil, err
	}
	info, err := b.store.Stat(ctx, req.GetKey())
	if errors.Is(err, blob.ErrNotFound) {
		return &selfhostv1.AuthorizeResponse{Exists: false}, nil
	}
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	var tok [16]byte
	_, _ = rand.Read(tok[:])
	token := hex.EncodeToString(tok[:])
	b.mu.Lock()
	b.urls[token] = req.GetKey()
	b.mu.Unlock()
	return &selfhostv1.AuthorizeResponse{Exists: true, Size: info.Size, ContentType: info.ContentType,
		ModTime: timestamppb.New(info.ModTime), Url: b.http.URL + "/o?sig=" + token,
		Expires: timestamppb.New(time.Now().Add(b.ttl)), Access: selfhostv1.Access_ACCESS_PUBLIC}, nil
}

// serveURL answers a "presigned" GET like S3: 403 for an unknown or revoked
// signature, Range and 416 by http.ServeContent.
func (b *fakeBroker) serveURL(w http.ResponseWriter, r *http.Request) {
	b.gets.Add(1)
	b.mu.Lock()
	key, ok := b.urls[r.URL.Query().Get("sig")]
	b.mu.Unlock()
	if !ok {
		http.Error(w, "AccessDenied: Request has expired", http.StatusForbidden)
		return
	}
	rc, err := b.store.Open(r.Context(), key, 0, -1)
	if errors.Is(err, blob.ErrNotFound) {
		http.Error(w, "NoSuchKey", http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
}

func (b *fakeBroker) PutObject(stream selfhostv1.StorageBrokerService_PutObjectServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "no header: %v", err)
	}
	h := first.GetHeader()
	if h == nil {
		return status.Error(codes.InvalidArgument, "the first message must be the header")
	}
	if err := b.check(h.GetKey(), h.GetScope()); err != nil {
		return err
	}
	if h.GetDigest() == "" {
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
		if err := b.store.Put(ctx, h.GetKey(), data, h.GetContentType()); err != nil {
			return status.Error(codes.Unavailable, err.Error())
		}
		return stream.SendAndClose(&selfhostv1.PutObjectResponse{Size: int64(len(data))})
	}
	d, err := oci.ParseDigest(h.GetDigest())
	if err != nil {
		return refusal(codes.InvalidArgument, "DIGEST_MISMATCH", "bad digest")
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
		return refusal(codes.InvalidArgument, "DIGEST_MISMATCH", "content does not match its digest")
	} else if err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	return stream.SendAndClose(&selfhostv1.PutObjectResponse{Size: n})
}

func (b *fakeBroker) DeleteObject(ctx context.Context, req *selfhostv1.DeleteObjectRequest) (*selfhostv1.DeleteObjectResponse, error) {
	if b.down.Load() {
		return nil, status.Error(codes.Unavailable, "down")
	}
	if err := b.store.Delete(ctx, req.GetKey()); err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &selfhostv1.DeleteObjectResponse{}, nil
}

// listPage is small so the suite's listings span several pages.
const listPage = 2

func (b *fakeBroker) ListObjects(ctx context.Context, req *selfhostv1.ListObjectsRequest) (*selfhostv1.ListObjectsResponse, error) {
	if b.down.Load() {
		return nil, status.Error(codes.Unavailable, "down")
	}
	var all []*selfhostv1.ListedObject
	err := b.store.List(ctx, req.GetPrefix(), func(key string, info blob.Info) error {
		if key > req.GetPageToken() {
			all = append(all, &selfhostv1.ListedObject{Key: key, Size: info.Size, ModTime: timestamppb.New(info.ModTime)})
		}
		return nil
	})
	if err != nil {
		return nil, status.Error(codes.Unavailable, fmt.Sprint(err))
	}
	sortListed(all)
	resp := &selfhostv1.ListObjectsResponse{Objects: all}
	if len(all) > listPage {
		resp.Objects, resp.NextPageToken = all[:listPage], all[listPage-1].GetKey()
	}
	return resp, nil
}

func sortListed(objs []*selfhostv1.ListedObject) {
	slices.SortFunc(objs, func(a, b *selfhostv1.ListedObject) int { return strings.Compare(a.GetKey(), b.GetKey()) })
}
