// Package s3 is a blob.Store on an S3 bucket (AWS, MinIO, versitygw, …),
// optionally under a key prefix. Verified writes use a multipart upload at
// the final key: an uncompleted upload is invisible, so it is the temporary
// state, and it is completed only after the digest and size have been
// checked (small objects skip multipart and are put in one request after
// the check).
package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
)

const (
	// MinPartSize is S3's smallest allowed multipart part (except the last).
	MinPartSize = 5 << 20
	// DefaultPartSize balances request count against memory: a writer holds
	// at most two parts (one filling, one uploading).
	DefaultPartSize = 8 << 20
	// cleanupTimeout bounds the abort of a discarded upload, which runs even
	// when the caller's context is already cancelled.
	cleanupTimeout = 30 * time.Second
)

// Store is an S3 blob.Store. It is safe for concurrent use.
type Store struct {
	client   *awss3.Client
	bucket   string
	prefix   string // "" or ends with "/"
	partSize int
	bufs     sync.Pool // of *[]byte with capacity partSize
}

var _ blob.Store = (*Store)(nil)

// Option configures a Store.
type Option func(*Store)

// WithPartSize sets the multipart part size; values below MinPartSize are
// raised to it.
func WithPartSize(n int) Option {
	return func(s *Store) { s.partSize = max(n, MinPartSize) }
}

// New returns a Store keeping objects in bucket under prefix ("" for the
// bucket's root; otherwise slash-separated segments, like a key).
func New(client *awss3.Client, bucket, prefix string, opts ...Option) (*Store, error) {
	if client == nil || bucket == "" {
		return nil, errors.New("s3 store: a client and a bucket are required")
	}
	prefix = strings.Trim(prefix, "/")
	if prefix != "" {
		// Keys below a store prefix may start with "_" freely: only the
		// segments themselves must be sane.
		if !blob.ValidKey("p/" + prefix) {
			return nil, fmt.Errorf("s3 store prefix %q: %w", prefix, blob.ErrInvalidKey)
		}
		prefix += "/"
	}
	s := &Store{client: client, bucket: bucket, prefix: prefix, partSize: DefaultPartSize}
	for _, o := range opts {
		o(s)
	}
	size := s.partSize
	s.bufs.New = func() any {
		b := make([]byte, 0, size)
		return &b
	}
	return s, nil
}

func (s *Store) getBuf() *[]byte { return s.bufs.Get().(*[]byte) }

func (s *Store) putBuf(b *[]byte) {
	*b = (*b)[:0]
	s.bufs.Put(b)
}

// object returns the object name of key, or an error wrapping
// blob.ErrInvalidKey.
func (s *Store) object(op, key string) (string, error) {
	if !blob.ValidKey(key) {
		return "", fmt.Errorf("s3 %s %q: %w", op, key, blob.ErrInvalidKey)
	}
	return s.prefix + key, nil
}

// wrap adds the operation and key to err and maps S3's "no such key" to
// blob.ErrNotFound. SDK errors carry the request, never the credentials.
func wrap(op, key string, err error) error {
	if isNotFound(err) {
		return fmt.Errorf("s3 %s %s: %w", op, key, blob.ErrNotFound)
	}
	return fmt.Errorf("s3 %s %s: %w", op, key, err)
}

// isNotFound reports a missing object: NoSuchKey from GET, and NotFound,
// the code the SDK gives a body-less 404 answer to HEAD.
func isNotFound(err error) bool {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	if errors.As(err, &nsk) || errors.As(err, &nf) {
		return true
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode() {
		case "NoSuchKey", "NotFound":
			return true
		}
	}
	return false
}

func isInvalidRange(err error) bool {
	var api smithy.APIError
	if errors.As(err, &api) && api.ErrorCode() == "InvalidRange" {
		return true
	}
	var re interface{ HTTPStatusCode() int }
	return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusRequestedRangeNotSatisfiable
}

// Stat implements blob.Store.
func (s *Store) Stat(ctx context.Context, key string) (blob.Info, error) {
	obj, err := s.object("stat", key)
	if err != nil {
		return blob.Info{}, err
	}
	out, err := s.client.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: &s.bucket, Key: &obj})
	if err != nil {
		return blob.Info{}, wrap("stat", key, err)
	}
	return blob.Info{
		Size:        aws.ToInt64(out.ContentLength),
		ContentType: blob.ContentTypeOr(aws.ToString(out.ContentType)),
		ModTime:     aws.ToTime(out.LastModified),
	}, nil
}

// Open implements blob.Store with a ranged GET. S3 rejects a range that
// starts at the end of the object, and a zero-length one cannot be written
// as a range at all: both are answered from a HEAD instead.
func (s *Store) Open(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	obj, err := s.object("open", key)
	if err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("s3 open %s: negative offset %d", key, offset)
	}
	if length == 0 {
		return s.emptyAt(ctx, key, offset)
	}
	in := &awss3.GetObjectInput{Bucket: &s.bucket, Key: &obj}
	switch {
	case length > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", offset, offset+length-1))
	case offset > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		if isInvalidRange(err) {
			return s.emptyAt(ctx, key, offset)
		}
		return nil, wrap("open", key, err)
	}
	return out.Body, nil
}

// emptyAt returns an empty body when offset is within or at the end of the
// object, and an error otherwise.
func (s *Store) emptyAt(ctx context.Context, key string, offset int64) (io.ReadCloser, error) {
	info, err := s.Stat(ctx, key)
	if err != nil {
		return nil, err
	}
	if offset > info.Size {
		return nil, fmt.Errorf("s3 open %s: offset %d outside object of %d bytes", key, offset, info.Size)
	}
	return http.NoBody, nil
}

// Put implements blob.Store. A PUT replaces an object atomically.
func (s *Store) Put(ctx context.Context, key string, data []byte, contentType string) error {
	obj, err := s.object("put", key)
	if err != nil {
		return err
	}
	if err := s.putObject(ctx, obj, data, contentType); err != nil {
		return wrap("put", key, err)
	}
	return nil
}

func (s *Store) putObject(ctx context.Context, obj string, data []byte, contentType string) error {
	in := &awss3.PutObjectInput{
		Bucket:        &s.bucket,
		Key:           &obj,
		Body:          bytes.NewReader(data),
		ContentLength: aws.Int64(int64(len(data))),
		ContentType:   aws.String(blob.ContentTypeOr(contentType)),
	}
	_, err := s.client.PutObject(ctx, in)
	return err
}

// Delete implements blob.Store. S3 deletes are idempotent; some compatible
// servers still answer 404 for a missing key, which is not an error here.
func (s *Store) Delete(ctx context.Context, key string) error {
	obj, err := s.object("delete", key)
	if err != nil {
		return err
	}
	_, err = s.client.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: &s.bucket, Key: &obj})
	if err != nil && !isNotFound(err) {
		return wrap("delete", key, err)
	}
	return nil
}

// List implements blob.Store. Objects in the bucket whose names are not
// valid keys (put there by something else) are skipped.
func (s *Store) List(ctx context.Context, prefix string, fn func(key string, info blob.Info) error) error {
	if !blob.ValidPrefix(prefix) {
		return fmt.Errorf("s3 list %q: %w", prefix, blob.ErrInvalidKey)
	}
	p := awss3.NewListObjectsV2Paginator(s.client, &awss3.ListObjectsV2Input{
		Bucket: &s.bucket,
		Prefix: aws.String(s.prefix + prefix),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return wrap("list", prefix, err)
		}
		for _, o := range page.Contents {
			key, ok := strings.CutPrefix(aws.ToString(o.Key), s.prefix)
			if !ok || !blob.ValidKey(key) {
				continue
			}
			info := blob.Info{Size: aws.ToInt64(o.Size), ModTime: aws.ToTime(o.LastModified)}
			if err := fn(key, info); err != nil {
				return err
			}
		}
	}
	return nil
}

// AbortStaleUploads aborts multipart uploads under the store's prefix that
// were started before olderThan ago: the leftovers of a crashed writer,
// which S3 keeps (and bills) until aborted. A bucket lifecycle rule
// (AbortIncompleteMultipartUpload) does the same where it is available.
// It returns the number of uploads aborted.
func (s *Store) AbortStaleUploads(ctx context.Context, olderThan time.Duration) (int, error) {
	before := time.Now().Add(-olderThan)
	p := awss3.NewListMultipartUploadsPaginator(s.client, &awss3.ListMultipartUploadsInput{
		Bucket: &s.bucket,
		Prefix: aws.String(s.prefix),
	})
	n := 0
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return n, wrap("list uploads", s.prefix, err)
		}
		for _, u := range page.Uploads {
			if !aws.ToTime(u.Initiated).Before(before) {
				continue
			}
			_, err := s.client.AbortMultipartUpload(ctx, &awss3.AbortMultipartUploadInput{
				Bucket: &s.bucket, Key: u.Key, UploadId: u.UploadId,
			})
			if err != nil && !isNoSuchUpload(err) {
				return n, wrap("abort upload", aws.ToString(u.Key), err)
			}
			n++
		}
	}
	return n, nil
}

func isNoSuchUpload(err error) bool {
	var nsu *types.NoSuchUpload
	var api smithy.APIError
	return errors.As(err, &nsu) || (errors.As(err, &api) && api.ErrorCode() == "NoSuchUpload")
}
