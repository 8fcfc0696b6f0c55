package s3_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/blobtest"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/s3"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/s3/s3test"
)

type server struct {
	client *awss3.Client
	bucket string
	n      atomic.Int64
}

func startServer(t *testing.T) *server {
	t.Helper()
	endpoint, bucket, access, secret := s3test.Start(t)
	return &server{client: s3test.Client(endpoint, access, secret), bucket: bucket}
}

// store returns a Store under a prefix no other store of this server uses.
// Parts are the S3 minimum so that a few MiB already exercise multipart.
func (srv *server) store(t *testing.T) *s3.Store {
	t.Helper()
	s, err := s3.New(srv.client, srv.bucket, fmt.Sprintf("store-%d", srv.n.Add(1)), s3.WithPartSize(s3.MinPartSize))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// pendingUploads lists the multipart uploads not completed or aborted.
func (srv *server) pendingUploads(t *testing.T) []string {
	t.Helper()
	// Not t.Context(): this also runs in Cleanup, after it is cancelled.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := srv.client.ListMultipartUploads(ctx, &awss3.ListMultipartUploadsInput{Bucket: &srv.bucket})
	if err != nil {
		t.Fatalf("list uploads: %v", err)
	}
	var keys []string
	for _, u := range out.Uploads {
		keys = append(keys, aws.ToString(u.Key))
	}
	return keys
}

func TestConformance(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	// Runs after every sub-test: whatever failed or was aborted, no
	// multipart upload may be left behind.
	t.Cleanup(func() {
		if keys := srv.pendingUploads(t); len(keys) > 0 {
			t.Errorf("multipart uploads left behind: %v", keys)
		}
	})
	blobtest.Run(t, func(t *testing.T) blob.Store { return srv.store(t) })
}

func commit(t *testing.T, s blob.Store, key string, data []byte, contentType string) {
	t.Helper()
	w, err := s.Create(t.Context(), key, blobtest.ExpectFor(data, contentType))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := w.Abort(t.Context()); err != nil {
			t.Errorf("Abort: %v", err)
		}
	}()
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestObjectsInBucket checks what lands in the bucket: the key under the
// store's prefix, the content type as the object's Content-Type, and a
// real multipart object for a blob of several parts.
func TestObjectsInBucket(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	s, err := s3.New(srv.client, srv.bucket, "/edge/cache/", s3.WithPartSize(s3.MinPartSize))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		size  int
		parts int // 0: a single PutObject
	}{
		{"single put", 1000, 0},
		{"exactly one part", s3.MinPartSize, 0},
		{"three parts", 2*s3.MinPartSize + 1, 3},
		{"parts fill exactly", 2 * s3.MinPartSize, 2},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			data := blobtest.Content(tc.size, uint64(i))
			key := fmt.Sprintf("blobs/sha256/obj%d", i)
			commit(t, s, key, data, "application/x-test")
			head, err := srv.client.HeadObject(t.Context(), &awss3.HeadObjectInput{
				Bucket: &srv.bucket, Key: aws.String("edge/cache/" + key),
			})
			if err != nil {
				t.Fatalf("object not at its prefixed name: %v", err)
			}
			if got := aws.ToString(head.ContentType); got != "application/x-test" {
				t.Errorf("Content-Type = %q", got)
			}
			etag := strings.Trim(aws.ToString(head.ETag), `"`)
			if suffix := fmt.Sprintf("-%d", tc.parts); tc.parts > 0 && !strings.HasSuffix(etag, suffix) {
				t.Errorf("ETag %s: want a multipart object of %d parts", etag, tc.parts)
			} else if tc.parts == 0 && strings.Contains(etag, "-") {
				t.Errorf("ETag %s: want a single PutObject", etag)
			}
			rc, err := s.Open(t.Context(), key, 0, -1)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if got, err := io.ReadAll(rc); err != nil || !bytes.Equal(got, data) {
				t.Errorf("read back %d bytes, %v", len(got), err)
			}
		})
	}
}

func TestPrefixIsolation(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	a, b := srv.store(t), srv.store(t)
	commit(t, a, "blobs/sha256/x", []byte("x"), "")
	if _, err := b.Stat(t.Context(), "blobs/sha256/x"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("other prefix sees the object: %v", err)
	}
	n := 0
	if err := b.List(t.Context(), "", func(string, blob.Info) error { n++; return nil }); err != nil || n != 0 {
		t.Errorf("other prefix lists %d objects, %v", n, err)
	}
}

func TestAbortStaleUploads(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	s := srv.store(t)
	data := blobtest.Content(s3.MinPartSize+1, 1)
	w, err := s.Create(t.Context(), "blobs/sha256/crashed", blobtest.ExpectFor(data, ""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil { // starts the multipart upload
		t.Fatal(err)
	}
	if n, err := s.AbortStaleUploads(t.Context(), 0); err != nil || n != 1 {
		t.Fatalf("AbortStaleUploads = %d, %v; want 1", n, err)
	}
	if keys := srv.pendingUploads(t); len(keys) != 0 {
		t.Errorf("uploads left: %v", keys)
	}
	// The writer's own abort finds the upload gone, which is fine.
	if err := w.Abort(t.Context()); err != nil {
		t.Errorf("Abort after the upload was aborted: %v", err)
	}
}

func TestNewClient(t *testing.T) {
	// Not parallel: it changes the environment LoadDefaultConfig reads.
	endpoint, bucket, access, secret := s3test.Start(t)
	dir := t.TempDir()
	for name, value := range map[string]string{
		"AWS_CA_BUNDLE":               "",
		"AWS_CONFIG_FILE":             filepath.Join(dir, "none"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "none"),
		"AWS_ACCESS_KEY_ID":           "",
		"AWS_SECRET_ACCESS_KEY":       "",
		"AWS_PROFILE":                 "",
		"AWS_REGION":                  "",
	} {
		t.Setenv(name, value)
	}
	opts := s3.Options{Endpoint: endpoint, PathStyle: true, AccessKeyID: access, SecretAccessKey: secret}
	if s := fmt.Sprintf("%v %+v %#v %s", opts, opts, opts, opts.String()); strings.Contains(s, secret) {
		t.Errorf("Options print their secret: %s", s)
	}
	client, err := s3.NewClient(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	s, err := s3.New(client, bucket, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(t.Context(), "tenants/ns/p/r/_tags/t", []byte("sha256:x"), "text/plain"); err != nil {
		t.Fatal(err)
	}
	info, err := s.Stat(t.Context(), "tenants/ns/p/r/_tags/t")
	if err != nil || info.Size != 8 || info.ContentType != "text/plain" {
		t.Errorf("Stat = %+v, %v", info, err)
	}

	// Wrong credentials: an error naming the operation and key, and
	// never the secret.
	bad, err := s3.NewClient(t.Context(), s3.Options{Endpoint: endpoint, PathStyle: true, AccessKeyID: access, SecretAccessKey: "wrong-secret-value"})
	if err != nil {
		t.Fatal(err)
	}
	bs, _ := s3.New(bad, bucket, "")
	_, err = bs.Stat(t.Context(), "blobs/sha256/x")
	if err == nil || errors.Is(err, blob.ErrNotFound) || !strings.Contains(err.Error(), "s3 stat blobs/sha256/x") ||
		strings.Contains(err.Error(), "wrong-secret-value") {
		t.Errorf("Stat with a wrong secret = %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	client := s3test.Client("http://127.0.0.1:1", "a", "b")
	for _, tc := range []struct{ name, bucket, prefix string }{
		{"no bucket", "", ""},
		{"dot-dot prefix", "b", "a/../c"},
		{"empty segment", "b", "a//c"},
	} {
		if _, err := s3.New(client, tc.bucket, tc.prefix); err == nil {
			t.Errorf("%s: New succeeded", tc.name)
		}
	}
}
