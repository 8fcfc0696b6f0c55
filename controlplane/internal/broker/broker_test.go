package broker_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/auth"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/broker"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/proof"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	s3store "github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/s3"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/s3/s3test"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/oci"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/upstream/upstreamtest"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// env is a broker on a real S3 server (versitygw) in front of a token-
// protected registry with one public and one private repository; team-a
// holds credentials for the private one, team-b holds none.
type env struct {
	t        *testing.T
	store    *s3store.Store
	reg      *upstreamtest.Registry
	upstream *httptest.Server
	client   selfhostv1.StorageBrokerServiceClient
	clock    *clock
	creds    *credsByNS
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type credsByNS struct {
	mu sync.Mutex
	m  map[string][2]string
}

func (c *credsByNS) set(ns, user, pass string) {
	c.mu.Lock()
	c.m[ns] = [2]string{user, pass}
	c.mu.Unlock()
}

const ttl = 10 * time.Minute

func newEnv(t *testing.T) *env {
	t.Helper()
	endpoint, bucket, access, secret := s3test.Start(t)
	store, err := s3store.New(s3test.Client(endpoint, access, secret), bucket, "")
	if err != nil {
		t.Fatal(err)
	}
	reg := upstreamtest.NewRegistry()
	up := httptest.NewServer(upstreamtest.RequireBearer(reg, upstreamtest.WithUser("alice", "pw"), upstreamtest.WithPrivate("team/")))
	t.Cleanup(up.Close)
	e := &env{t: t, store: store, reg: reg, upstream: up, clock: &clock{t: time.Now()}, creds: &credsByNS{m: map[string][2]string{}}}
	e.creds.set("team-a", "alice", "pw")
	e.client = e.serve(store)
	return e
}

// config is each namespace's EdgeConfig as the snapshot would build it.
func (e *env) config(ns string) (*selfhostv1.EdgeConfig, bool) {
	e.creds.mu.Lock()
	c := e.creds.m[ns]
	e.creds.mu.Unlock()
	return &selfhostv1.EdgeConfig{Namespace: ns, Upstreams: []*selfhostv1.Upstream{{
		Prefix: "up", Url: e.upstream.URL, Credentials: &selfhostv1.Credentials{Username: c[0], Password: c[1]},
	}}}, true
}

// serve runs a broker (a fresh prover: a restarted control plane) on
// loopback; the namespace of a call comes from test metadata instead of a
// token.
func (e *env) serve(store *s3store.Store) selfhostv1.StorageBrokerServiceClient {
	prover := proof.New(proof.NewUpstreamChecker(e.config, nil), store, proof.Options{TTL: ttl, Now: e.clock.now})
	srv := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			return h(withNS(ctx), req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, &nsStream{ss, withNS(ss.Context())})
		}))
	selfhostv1.RegisterStorageBrokerServiceServer(srv, broker.New(store, prover, nil))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	e.t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	return selfhostv1.NewStorageBrokerServiceClient(conn)
}

type nsStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *nsStream) Context() context.Context { return s.ctx }

func withNS(ctx context.Context) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("test-namespace"); len(v) == 1 {
		return auth.WithIdentity(ctx, auth.Identity{Kind: auth.KindEdge, Namespace: v[0], Name: "edge/" + v[0]})
	}
	return ctx
}

func as(ns string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "test-namespace", ns)
}

// image pushes a one-layer image to repo and returns the manifest's body,
// digest and the layer.
func (e *env) image(repo, tag, layer string) (body []byte, md, ld oci.Digest) {
	ld = e.reg.PutBlob(repo, []byte(layer))
	cd := e.reg.PutBlob(repo, []byte(`{"config":"`+repo+`"}`))
	m := map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeOCIManifest,
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.String(), "size": 20},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld.String(), "size": len(layer)}}}
	body, _ = json.Marshal(m)
	md = e.reg.PutManifest(repo, tag, oci.MediaTypeOCIManifest, body)
	return body, md, ld
}

func scope(repo string) *selfhostv1.ObjectScope {
	return &selfhostv1.ObjectScope{Prefix: "up", Repository: repo}
}

func (e *env) authorize(ctx context.Context, key, repo string) (*selfhostv1.AuthorizeResponse, error) {
	return e.client.Authorize(ctx, &selfhostv1.AuthorizeRequest{Key: key, Scope: scope(repo)})
}

func (e *env) put(ctx context.Context, key, repo string, d oci.Digest, contentType string, data []byte) error {
	e.t.Helper()
	st, err := e.client.PutObject(ctx)
	if err != nil {
		return err
	}
	size := int64(len(data))
	if err := st.Send(&selfhostv1.PutObjectRequest{Part: &selfhostv1.PutObjectRequest_Header{Header: &selfhostv1.PutObjectHeader{
		Key: key, Scope: scope(repo), Digest: d.String(), Size: size, ContentType: contentType}}}); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	for len(data) > 0 {
		n := min(len(data), 7)
		if err := st.Send(&selfhostv1.PutObjectRequest{Part: &selfhostv1.PutObjectRequest_Data{Data: data[:n]}}); err != nil {
			break // the server refused early; CloseAndRecv says why
		}
		data = data[n:]
	}
	_, err = st.CloseAndRecv()
	return err
}

func reason(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

func wantRefused(t *testing.T, what string, err error, code codes.Code, why string) {
	t.Helper()
	if status.Code(err) != code || reason(err) != why {
		t.Errorf("%s: err = %v (reason %q), want %s %s", what, err, reason(err), code, why)
	}
}

func fetch(t *testing.T, url, rng string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestPrivateContentNeedsItsOwnProof(t *testing.T) {
	e := newEnv(t)
	a, b := as("team-a"), as("team-b")
	body, md, ld := e.image("team/secret", "v1", "private layer bytes")
	mkey, lkey := blob.ManifestKey(md), blob.BlobKey(ld)

	// B asks first: nothing proves access, so not even existence is told.
	_, err := e.authorize(b, mkey, "team/secret")
	wantRefused(t, "team-b manifest before anything", err, codes.PermissionDenied, broker.ReasonNoProof)

	g, err := e.authorize(a, mkey, "team/secret")
	if err != nil || g.GetExists() || g.GetAccess() != selfhostv1.Access_ACCESS_NAMESPACE {
		t.Fatalf("team-a manifest: %v %v", g, err)
	}
	if err := e.put(a, mkey, "team/secret", md, "text/html", body); reason(err) != broker.ReasonInvalidKey {
		t.Errorf("manifest stored as text/html: %v", err)
	}
	if err := e.put(a, mkey, "team/secret", md, oci.MediaTypeOCIManifest, body); err != nil {
		t.Fatalf("team-a stores its manifest: %v", err)
	}
	g, err = e.authorize(a, mkey, "team/secret")
	if err != nil || !g.GetExists() || g.GetContentType() != oci.MediaTypeOCIManifest || g.GetUrl() == "" {
		t.Fatalf("team-a manifest after store: %v %v", g, err)
	}
	if code, got := fetch(t, g.GetUrl(), ""); code != 200 || got != string(body) {
		t.Fatalf("presigned GET: %d %q", code, got)
	}
	if code, _ := fetch(t, strings.Replace(g.GetUrl(), "Signature=", "Signature=0", 1), ""); code != http.StatusForbidden {
		t.Errorf("tampered presigned URL answered %d", code)
	}

	// The layer: wrong bytes are refused and leave nothing; right ones stay.
	if _, err := e.authorize(a, lkey, "team/secret"); err != nil {
		t.Fatalf("team-a layer: %v", err)
	}
	err = e.put(a, lkey, "team/secret", ld, "", []byte("poisoned layer bytes"))
	wantRefused(t, "wrong layer bytes", err, codes.InvalidArgument, broker.ReasonDigestMismatch)
	if g, err := e.authorize(a, lkey, "team/secret"); err != nil || g.GetExists() {
		t.Fatalf("after a refused upload the layer exists=%v (%v)", g.GetExists(), err)
	}
	if err := e.put(a, lkey, "team/secret", ld, "", []byte("private layer bytes")); err != nil {
		t.Fatal(err)
	}
	g, err = e.authorize(a, lkey, "team/secret")
	if err != nil || !g.GetExists() {
		t.Fatalf("team-a layer after store: %v %v", g, err)
	}
	if code, got := fetch(t, g.GetUrl(), "bytes=8-12"); code != http.StatusPartialContent || got != "layer" {
		t.Errorf("ranged presigned GET: %d %q", code, got)
	}

	// B: by digest, through another repository it may read, or by
	// uploading: all refused; an upstream it does not have is refused too.
	for _, tc := range []struct{ name, key, repo string }{
		{"manifest", mkey, "team/secret"}, {"layer", lkey, "team/secret"},
		{"layer via a public repo", lkey, "pub/app"}, {"manifest via a public repo", mkey, "pub/app"},
	} {
		_, err := e.authorize(b, tc.key, tc.repo)
		wantRefused(t, "team-b "+tc.name, err, codes.PermissionDenied, broker.ReasonNoProof)
	}
	_, err = e.client.Authorize(b, &selfhostv1.AuthorizeRequest{Key: mkey, Scope: &selfhostv1.ObjectScope{Prefix: "other", Repository: "team/secret"}})
	wantRefused(t, "team-b via unknown upstream", err, codes.PermissionDenied, broker.ReasonUnknownUpstream)
	err = e.put(b, lkey, "team/secret", ld, "", []byte("private layer bytes"))
	wantRefused(t, "team-b upload", err, codes.PermissionDenied, broker.ReasonNoProof)

	// B with its own credentials for the same repository: granted, and the
	// stored bytes are reused (no second upload needed).
	e.creds.set("team-b", "alice", "pw")
	_, err = e.authorize(b, lkey, "team/secret")
	wantRefused(t, "team-b layer before its manifest proof", err, codes.PermissionDenied, broker.ReasonNoProof)
	e.clock.add(time.Minute) // past the negative cache
	if g, err = e.authorize(b, mkey, "team/secret"); err != nil || !g.GetExists() || g.GetAccess() != selfhostv1.Access_ACCESS_NAMESPACE {
		t.Fatalf("team-b with credentials, manifest: %v %v", g, err)
	}
	if g, err = e.authorize(b, lkey, "team/secret"); err != nil || !g.GetExists() {
		t.Fatalf("team-b with credentials, layer: %v %v", g, err)
	}

	// Revoked: after the proof TTL, A's old proof no longer serves.
	e.creds.set("team-a", "alice", "revoked")
	if _, err := e.authorize(a, mkey, "team/secret"); err != nil {
		t.Fatalf("within the TTL a proof holds: %v", err)
	}
	e.clock.add(ttl + time.Second)
	_, err = e.authorize(a, mkey, "team/secret")
	wantRefused(t, "revoked credentials after the TTL", err, codes.PermissionDenied, broker.ReasonNoProof)
}

func TestPublicContentIsSharedAlsoWhenTheUpstreamIsDown(t *testing.T) {
	e := newEnv(t)
	a, b := as("team-a"), as("team-b")
	body, md, ld := e.image("pub/app", "v1", "public layer")
	mkey, lkey := blob.ManifestKey(md), blob.BlobKey(ld)
	g, err := e.authorize(a, mkey, "pub/app")
	if err != nil || g.GetAccess() != selfhostv1.Access_ACCESS_PUBLIC {
		t.Fatalf("public manifest: %v %v", g, err)
	}
	if err := e.put(a, mkey, "pub/app", md, oci.MediaTypeOCIManifest, body); err != nil {
		t.Fatal(err)
	}
	if err := e.put(a, lkey, "pub/app", ld, "", []byte("public layer")); err != nil {
		t.Fatal(err)
	}
	e.upstream.Close()
	// A restarted control plane (fresh prover, same bucket) with the
	// upstream down still shares it: the public proof was stored.
	e.client = e.serve(e.store)
	e.clock.add(2 * ttl)
	for _, key := range []string{mkey, lkey} {
		g, err := e.authorize(b, key, "pub/app")
		if err != nil || !g.GetExists() || g.GetAccess() != selfhostv1.Access_ACCESS_PUBLIC {
			t.Fatalf("team-b %s with the upstream down: %v %v", key, g, err)
		}
	}
	// Something never proven is not granted during the outage.
	_, err = e.authorize(b, blob.ManifestKey(oci.FromBytes([]byte("other"))), "pub/app")
	if status.Code(err) != codes.Unavailable {
		t.Errorf("unproven manifest during the outage: %v, want Unavailable", err)
	}
}

func TestRecordsBelongToTheirNamespace(t *testing.T) {
	e := newEnv(t)
	a, b := as("team-a"), as("team-b")
	key := "tenants/team-a/up/pub/app/_tags/v1"
	rec := []byte(`{"digest":"sha256:` + strings.Repeat("a", 64) + `","lastChecked":"2099-01-01T00:00:00Z","fetchedAt":"2001-01-01T00:00:00Z"}`)
	err := e.put(b, key, "", oci.Digest{}, "", rec)
	wantRefused(t, "team-b writes team-a's tag", err, codes.PermissionDenied, broker.ReasonOtherNamespace)
	_, err = e.client.DeleteObject(b, &selfhostv1.DeleteObjectRequest{Key: key})
	wantRefused(t, "team-b deletes team-a's tag", err, codes.PermissionDenied, broker.ReasonOtherNamespace)
	_, err = e.client.ListObjects(b, &selfhostv1.ListObjectsRequest{Prefix: "tenants/team-a/"})
	wantRefused(t, "team-b lists team-a", err, codes.PermissionDenied, broker.ReasonOtherNamespace)
	_, err = e.client.ListObjects(b, &selfhostv1.ListObjectsRequest{Prefix: "blobs/"})
	wantRefused(t, "team-b lists blobs", err, codes.PermissionDenied, broker.ReasonOtherNamespace)
	_, err = e.client.DeleteObject(a, &selfhostv1.DeleteObjectRequest{Key: "blobs/sha256/" + strings.Repeat("a", 64)})
	wantRefused(t, "team-a deletes a shared blob", err, codes.PermissionDenied, broker.ReasonOtherNamespace)
	_, err = e.authorize(a, "proofs/public/up/pub/app/_m/sha256/"+strings.Repeat("a", 64), "pub/app")
	wantRefused(t, "team-a reads a proof", err, codes.PermissionDenied, broker.ReasonInvalidKey)

	if err := e.put(a, key, "", oci.Digest{}, "", rec); err != nil {
		t.Fatal(err)
	}
	rc, err := e.store.Open(context.Background(), key, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var got struct{ LastChecked, FetchedAt time.Time }
	if err := json.NewDecoder(rc).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.LastChecked.Year() == 2099 || got.LastChecked.After(time.Now()) || got.FetchedAt.Year() != 2001 {
		t.Errorf("stored record times = %+v, want lastChecked clamped to now, fetchedAt kept", got)
	}
	list, err := e.client.ListObjects(a, &selfhostv1.ListObjectsRequest{Prefix: "tenants/team-a/"})
	if err != nil || len(list.GetObjects()) != 1 || list.GetObjects()[0].GetKey() != key {
		t.Errorf("team-a lists its records: %v %v", list, err)
	}
	if _, err := e.client.Authorize(context.Background(), &selfhostv1.AuthorizeRequest{Key: key}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("no identity: %v", err)
	}
	if err := e.put(a, "tenants/team-a/x", "", oci.Digest{}, "", []byte("not json")); status.Code(err) != codes.InvalidArgument {
		t.Errorf("non-JSON record: %v", err)
	}
}
