package s3

import (
	"context"
	"fmt"
	"time"

	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
)

// Presign returns a URL that lets whoever holds it GET key (Range allowed)
// until the returned time, without any credentials of their own. It is how
// the control plane hands one object at a time to an edge that holds no
// storage keys. The URL is a secret while it is valid: never log it.
func (s *Store) Presign(ctx context.Context, key string, ttl time.Duration) (string, time.Time, error) {
	obj, err := s.object("presign", key)
	if err != nil {
		return "", time.Time{}, err
	}
	expires := time.Now().Add(ttl)
	req, err := awss3.NewPresignClient(s.client).PresignGetObject(ctx,
		&awss3.GetObjectInput{Bucket: &s.bucket, Key: &obj}, awss3.WithPresignExpires(ttl))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("s3 presign %s: %w", key, err)
	}
	return req.URL, expires, nil
}
