package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
)

// S3 is a running versitygw with its posix backend and one bucket. It is
// the same server internal/blob/s3/s3test starts, which test/ cannot
// import (it is internal to edge/).
type S3 struct {
	// Endpoint is http://127.0.0.1:PORT.
	Endpoint string
	// Bucket exists; Access and Secret are the root credentials.
	Bucket, Access, Secret string
	// Region is what clients should sign for.
	Region string
	// Proc is the server process.
	Proc *Process
}

// StartS3 starts versitygw on a free port with a fresh directory and
// creates a bucket.
func StartS3(t testing.TB) *S3 {
	t.Helper()
	bin := VersityGWBin(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatalf("versitygw dir: %v", err)
	}
	s := &S3{Bucket: "edge-e2e", Access: "harness-" + randHex(t, 4), Secret: randHex(t, 20), Region: "us-east-1"}
	err := startWithPorts(1, func(ports []int) error {
		addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
		// VGW_*/ROOT_* variables of the parent would override the flags.
		p, err := startProcess("versitygw", bin, []string{"--access", s.Access, "--secret", s.Secret, "--port", addr, "posix", data}, nil, dir)
		if err != nil {
			return err
		}
		// Any HTTP answer (an unsigned request gets an S3 error) is ready.
		err = waitReady(p, func(ctx context.Context) error {
			return httpStatus(ctx, "http://"+addr+"/", http.StatusOK, http.StatusForbidden, http.StatusBadRequest)
		})
		if err != nil {
			p.Stop()
			return portError(p, err)
		}
		s.Endpoint, s.Proc = "http://"+addr, p
		return nil
	})
	if err != nil {
		t.Fatalf("start versitygw: %v", err)
	}
	cleanupProcess(t, s.Proc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Client().CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String(s.Bucket)}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	return s
}

// Client returns an SDK client with static credentials and path-style
// addressing; it reads nothing from the environment (AWS_CA_BUNDLE).
func (s *S3) Client() *awss3.Client {
	return awss3.New(awss3.Options{
		BaseEndpoint:               aws.String(s.Endpoint),
		Region:                     s.Region,
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider(s.Access, s.Secret, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// EdgeEnv is the environment an edge needs to use this server: the
// standard AWS credential chain variables.
func (s *S3) EdgeEnv() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.Access,
		"AWS_SECRET_ACCESS_KEY=" + s.Secret,
		"AWS_REGION=" + s.Region,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// EdgeArgs are the edge flags that store under prefix in the bucket.
func (s *S3) EdgeArgs(prefix string) []string {
	return []string{
		"--storage", "s3://" + s.Bucket + "/" + prefix,
		"--s3-endpoint", s.Endpoint,
		"--s3-region", s.Region,
		"--s3-path-style",
	}
}

// Keys lists every key in the bucket under prefix.
func (s *S3) Keys(t testing.TB, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var keys []string
	p := awss3.NewListObjectsV2Paginator(s.Client(), &awss3.ListObjectsV2Input{Bucket: aws.String(s.Bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatalf("list bucket %s/%s: %v", s.Bucket, prefix, err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}

func randHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random: %v", err)
	}
	return hex.EncodeToString(b)
}
