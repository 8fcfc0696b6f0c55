package s3

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
)

// Options say how to reach the S3 service. Empty fields fall back to the
// standard AWS configuration chain (environment, shared config files,
// instance or pod identity).
type Options struct {
	// Endpoint is the service URL of an S3-compatible server
	// ("http://minio:9000"); empty means AWS.
	Endpoint string
	// Region; S3-compatible servers usually accept any, "us-east-1" is
	// used when neither this nor the environment sets one.
	Region string
	// PathStyle addresses buckets as <endpoint>/<bucket>, which most
	// S3-compatible servers need (no wildcard DNS for virtual hosts).
	PathStyle bool
	// AccessKeyID, SecretAccessKey and SessionToken are static credentials,
	// for example delivered by the control plane; when AccessKeyID is empty
	// the default credential chain is used.
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
}

// String describes o without its secrets, so Options can be logged.
func (o Options) String() string {
	creds := "default chain"
	if o.AccessKeyID != "" {
		creds = "static key " + o.AccessKeyID
	}
	return fmt.Sprintf("s3 endpoint=%q region=%q pathStyle=%v credentials=%s", o.Endpoint, o.Region, o.PathStyle, creds)
}

// GoString keeps %#v from printing the secret too.
func (o Options) GoString() string { return o.String() }

// NewClient builds an S3 client from o and the standard AWS configuration.
// Checksums are only computed where S3 requires them: every write is
// verified against its content digest before it becomes visible, and many
// S3-compatible servers reject the SDK's newer default trailing checksums.
func NewClient(ctx context.Context, o Options) (*awss3.Client, error) {
	loadOpts := []func(*config.LoadOptions) error{
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	}
	if o.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(o.Region))
	}
	if o.AccessKeyID != "" {
		loadOpts = append(loadOpts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(o.AccessKeyID, o.SecretAccessKey, o.SessionToken)))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		// The config loader's errors name files and variables, not secrets.
		return nil, fmt.Errorf("s3 client config: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	return awss3.NewFromConfig(cfg, func(so *awss3.Options) {
		if o.Endpoint != "" {
			so.BaseEndpoint = aws.String(o.Endpoint)
		}
		so.UsePathStyle = o.PathStyle
	}), nil
}
