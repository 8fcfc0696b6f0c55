package s3

import (
	"context"
	"fmt"
	"io"
	"sort"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"golang.org/x/sync/errgroup"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
)

// putFileParallel is how many parts of one PutFile upload at once.
const putFileParallel = 4

// PutFile implements blob.FilePutter: the parts are read straight from src
// (no part buffers in memory) and uploaded in parallel.
func (s *Store) PutFile(ctx context.Context, key string, src io.ReaderAt, want blob.Expect) error {
	obj, err := s.object("put", key)
	if err != nil {
		return err
	}
	size, ps := want.Size, int64(s.partSize)
	ct := aws.String(blob.ContentTypeOr(want.ContentType))
	if size <= ps {
		_, err := s.client.PutObject(ctx, &awss3.PutObjectInput{
			Bucket: &s.bucket, Key: &obj, ContentType: ct,
			Body: io.NewSectionReader(src, 0, size), ContentLength: aws.Int64(size),
		})
		if err != nil {
			return wrap("put file", key, err)
		}
		return nil
	}
	up, err := s.client.CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: &obj, ContentType: ct})
	if err != nil {
		return wrap("create upload", key, err)
	}
	n := int((size + ps - 1) / ps)
	parts := make([]types.CompletedPart, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(putFileParallel)
	for i := 0; i < n; i++ {
		off := int64(i) * ps
		g.Go(func() error {
			out, err := s.client.UploadPart(gctx, &awss3.UploadPartInput{
				Bucket: &s.bucket, Key: &obj, UploadId: up.UploadId, PartNumber: aws.Int32(int32(i + 1)),
				Body: io.NewSectionReader(src, off, min(ps, size-off)), ContentLength: aws.Int64(min(ps, size-off)),
			})
			if err != nil {
				return wrap(fmt.Sprintf("upload part %d", i+1), key, err)
			}
			parts[i] = types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(int32(i + 1))}
			return nil
		})
	}
	err = g.Wait()
	if err == nil {
		sort.Slice(parts, func(a, b int) bool { return *parts[a].PartNumber < *parts[b].PartNumber })
		_, err = s.client.CompleteMultipartUpload(ctx, &awss3.CompleteMultipartUploadInput{
			Bucket: &s.bucket, Key: &obj, UploadId: up.UploadId,
			MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
		})
		if err != nil {
			err = wrap("commit", key, err)
		}
	}
	if err != nil {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		_, _ = s.client.AbortMultipartUpload(actx, &awss3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: &obj, UploadId: up.UploadId})
		return err
	}
	return nil
}
