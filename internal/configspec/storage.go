package configspec

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// MaxS3PrefixLength bounds storage.s3.prefix; S3 keys are at most 1024
// bytes and the edge's own key layout needs the rest.
const MaxS3PrefixLength = 512

// bucketRE is the S3 bucket naming rule: 3–63 lower-case letters, digits,
// '.' and '-', starting and ending with a letter or digit.
var bucketRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// ValidateStorage checks the storage part of an EdgeConfig; field names it
// in errors ("storage"). A nil StorageConfig is valid (none configured).
// Errors never contain the access key or the secret.
func ValidateStorage(field string, s *selfhostv1.StorageConfig) error {
	if s == nil {
		return nil
	}
	s3 := s.GetS3()
	switch {
	case s3 != nil && s.GetBrokered() != nil:
		return fmt.Errorf("%w: %s: s3 and brokered are exclusive", ErrInvalid, field)
	case s.GetBrokered() != nil:
		return nil
	case s3 == nil:
		return fmt.Errorf("%w: %s: one of s3 or brokered is required", ErrInvalid, field)
	}
	f := field + ".s3"
	b := s3.GetBucket()
	switch {
	case b == "":
		return fmt.Errorf("%w: %s.bucket: must not be empty", ErrInvalid, f)
	case !bucketRE.MatchString(b) || strings.Contains(b, "..") || strings.Contains(b, ".-") || strings.Contains(b, "-."):
		return fmt.Errorf("%w: %s.bucket %q: not an S3 bucket name (3-63 of a-z 0-9 . -, starting and ending with a letter or digit)", ErrInvalid, f, b)
	}
	p := s3.GetPrefix()
	switch {
	case len(p) > MaxS3PrefixLength:
		return fmt.Errorf("%w: %s.prefix: longer than %d characters", ErrInvalid, f, MaxS3PrefixLength)
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("%w: %s.prefix %q: must not start with '/'", ErrInvalid, f, p)
	case p != "" && hasDotDot(p):
		return fmt.Errorf("%w: %s.prefix %q: must not contain '..' segments", ErrInvalid, f, p)
	case strings.ContainsAny(p, "\x00\r\n\\"):
		return fmt.Errorf("%w: %s.prefix: contains a control character or '\\'", ErrInvalid, f)
	}
	if len(s3.GetRegion()) > MaxNameLength || !regionRE.MatchString(s3.GetRegion()) {
		return fmt.Errorf("%w: %s.region %q: not a region name", ErrInvalid, f, s3.GetRegion())
	}
	if err := validateEndpoint(f+".endpoint", s3.GetEndpoint()); err != nil {
		return err
	}
	id, secret := s3.GetAccessKeyId(), s3.GetSecretAccessKey()
	switch {
	case (id == "") != (secret == ""):
		return fmt.Errorf("%w: %s: access_key_id and secret_access_key go together (both, or neither for the edge's own AWS credentials)", ErrInvalid, f)
	case len(id) > MaxSecretBytes || len(secret) > MaxSecretBytes:
		return fmt.Errorf("%w: %s: credentials too long", ErrInvalid, f)
	}
	return nil
}

var regionRE = regexp.MustCompile(`^([a-z0-9]+(-[a-z0-9]+)*)?$`)

func hasDotDot(p string) bool {
	for seg := range strings.SplitSeq(p, "/") {
		if seg == ".." {
			return true
		}
	}
	return false
}

// validateEndpoint accepts "" (AWS) or http(s)://host[:port] with nothing
// else: no credentials, path, query or fragment.
func validateEndpoint(field, raw string) error {
	if raw == "" {
		return nil
	}
	if len(raw) > MaxURLLength {
		return fmt.Errorf("%w: %s: longer than %d characters", ErrInvalid, field, MaxURLLength)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: %s: does not parse", ErrInvalid, field)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%w: %s %q: scheme must be http or https", ErrInvalid, field, redact(u))
	case u.User != nil:
		return fmt.Errorf("%w: %s: must not carry credentials", ErrInvalid, field)
	case u.Host == "" || !validHost(u.Host):
		return fmt.Errorf("%w: %s %q: needs a host name or IP address with an optional port", ErrInvalid, field, redact(u))
	case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery || u.Opaque != "":
		return fmt.Errorf("%w: %s %q: must have no path, query or fragment", ErrInvalid, field, redact(u))
	}
	return nil
}
