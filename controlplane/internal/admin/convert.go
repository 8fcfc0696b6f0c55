package admin

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/configstore"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/configspec"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// upstreamInfo is u as the admin API shows it: no credentials.
func upstreamInfo(u *selfhostv1.Upstream) *selfhostv1.UpstreamInfo {
	c := u.GetCredentials()
	return &selfhostv1.UpstreamInfo{
		Prefix:         u.GetPrefix(),
		Aliases:        slices.Clone(u.GetAliases()),
		Url:            u.GetUrl(),
		Hosts:          slices.Clone(u.GetHosts()),
		HasCredentials: c.GetUsername() != "" || c.GetPassword() != "",
		TagTtl:         proto.CloneOf(u.GetTagTtl()),
	}
}

// withoutSecrets deep-copies an EdgeConfig without credentials, the pull
// token, the proxy nodes' Clash maps (passwords, UUIDs) and the shared S3
// storage's access key and secret. The copy
// matters: the original is shared with every edge.
func withoutSecrets(c *selfhostv1.EdgeConfig) *selfhostv1.EdgeConfig {
	out := proto.CloneOf(c)
	for _, u := range out.GetUpstreams() {
		u.Credentials = nil
	}
	if out.GetPolicy() != nil {
		out.Policy.PullToken = ""
	}
	for _, n := range out.GetProxy().GetNodes() {
		n.ClashJson = ""
	}
	if s3 := out.GetStorage().GetS3(); s3 != nil {
		// Bucket, endpoint and the rest stay: operators need them to see
		// where edges cache. The S3 identity does not.
		s3.AccessKeyId, s3.SecretAccessKey = "", ""
	}
	return out
}

func invalid(format string, args ...any) error {
	return status.Error(codes.InvalidArgument, fmt.Sprintf(format, args...))
}

func notFound(format string, args ...any) error {
	return status.Error(codes.NotFound, fmt.Sprintf(format, args...))
}

// toStatus translates the store's errors into gRPC status errors. Their
// messages name the field and never carry a secret (configspec and the
// store make sure of it). Anything unexpected is logged here, once, and
// reported as Internal without details.
func (s *Service) toStatus(ctx context.Context, method string, err error) error {
	switch {
	case errors.Is(err, configspec.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, configstore.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, configstore.ErrInUse):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	s.log.Error("admin call failed", "method", method, "by", caller(ctx), "err", err)
	return status.Error(codes.Internal, method+" failed; the control plane's log has the details")
}
