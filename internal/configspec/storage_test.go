package configspec

import (
	"errors"
	"strings"
	"testing"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

func TestValidateStorage(t *testing.T) {
	t.Parallel()
	const secret = "SECRETvalue0123456789"
	ok := func() *selfhostv1.S3Storage {
		return &selfhostv1.S3Storage{Bucket: "edge-cache.v1", Prefix: "shared/cache", Region: "eu-west-1",
			Endpoint: "http://127.0.0.1:7070", PathStyle: true, AccessKeyId: "AKIDEXAMPLE", SecretAccessKey: secret}
	}
	tests := []struct {
		name   string
		mutate func(s *selfhostv1.S3Storage)
		field  string // "" = valid
	}{
		{"full", func(*selfhostv1.S3Storage) {}, ""},
		{"aws defaults", func(s *selfhostv1.S3Storage) {
			s.Prefix, s.Region, s.Endpoint, s.PathStyle, s.AccessKeyId, s.SecretAccessKey = "", "", "", false, "", ""
		}, ""},
		{"https endpoint with slash", func(s *selfhostv1.S3Storage) { s.Endpoint = "https://s3.example.com/" }, ""},
		{"no bucket", func(s *selfhostv1.S3Storage) { s.Bucket = "" }, "storage.s3.bucket"},
		{"upper bucket", func(s *selfhostv1.S3Storage) { s.Bucket = "Edge" }, "storage.s3.bucket"},
		{"short bucket", func(s *selfhostv1.S3Storage) { s.Bucket = "ab" }, "storage.s3.bucket"},
		{"long bucket", func(s *selfhostv1.S3Storage) { s.Bucket = strings.Repeat("a", 64) }, "storage.s3.bucket"},
		{"bucket dots", func(s *selfhostv1.S3Storage) { s.Bucket = "a..b" }, "storage.s3.bucket"},
		{"bucket ends dash", func(s *selfhostv1.S3Storage) { s.Bucket = "abc-" }, "storage.s3.bucket"},
		{"prefix slash", func(s *selfhostv1.S3Storage) { s.Prefix = "/cache" }, "storage.s3.prefix"},
		{"prefix dotdot", func(s *selfhostv1.S3Storage) { s.Prefix = "a/../b" }, "storage.s3.prefix"},
		{"prefix only dotdot", func(s *selfhostv1.S3Storage) { s.Prefix = ".." }, "storage.s3.prefix"},
		{"bad region", func(s *selfhostv1.S3Storage) { s.Region = "EU West" }, "storage.s3.region"},
		{"endpoint scheme", func(s *selfhostv1.S3Storage) { s.Endpoint = "ftp://s3" }, "storage.s3.endpoint"},
		{"endpoint userinfo", func(s *selfhostv1.S3Storage) { s.Endpoint = "http://u:" + secret + "@s3" }, "storage.s3.endpoint"},
		{"endpoint path", func(s *selfhostv1.S3Storage) { s.Endpoint = "http://s3/bucket" }, "storage.s3.endpoint"},
		{"endpoint query", func(s *selfhostv1.S3Storage) { s.Endpoint = "http://s3?x=1" }, "storage.s3.endpoint"},
		{"endpoint no host", func(s *selfhostv1.S3Storage) { s.Endpoint = "http://" }, "storage.s3.endpoint"},
		{"key without secret", func(s *selfhostv1.S3Storage) { s.SecretAccessKey = "" }, "storage.s3"},
		{"secret without key", func(s *selfhostv1.S3Storage) { s.AccessKeyId = "" }, "storage.s3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s3 := ok()
			tt.mutate(s3)
			err := ValidateStorage("storage", &selfhostv1.StorageConfig{S3: s3})
			if tt.field == "" {
				if err != nil {
					t.Fatalf("ValidateStorage: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("err %q does not name %q", err, tt.field)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("err %q leaks the secret", err)
			}
		})
	}
	if err := ValidateStorage("storage", nil); err != nil {
		t.Errorf("nil storage: %v", err)
	}
	if err := ValidateStorage("storage", &selfhostv1.StorageConfig{}); err == nil || !strings.Contains(err.Error(), "s3 or brokered") {
		t.Errorf("empty storage: err = %v, want s3 or brokered required", err)
	}
	if err := ValidateStorage("storage", &selfhostv1.StorageConfig{Brokered: &selfhostv1.BrokeredStorage{}}); err != nil {
		t.Errorf("brokered storage: %v", err)
	}
	both := &selfhostv1.StorageConfig{Brokered: &selfhostv1.BrokeredStorage{}, S3: &selfhostv1.S3Storage{Bucket: "edge-cache"}}
	if err := ValidateStorage("storage", both); err == nil || !strings.Contains(err.Error(), "exclusive") {
		t.Errorf("s3 and brokered: err = %v, want exclusive", err)
	}
	c := &selfhostv1.EdgeConfig{Version: "v1", Namespace: "team-a", Upstreams: DefaultUpstreams(),
		Storage: &selfhostv1.StorageConfig{S3: &selfhostv1.S3Storage{Bucket: "x"}}}
	if err := ValidateEdgeConfig(c); err == nil || !strings.Contains(err.Error(), "storage.s3.bucket") {
		t.Errorf("ValidateEdgeConfig with a bad bucket: err = %v", err)
	}
}
