package grpcserver

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/broker"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/configstore"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/proof"
	s3store "github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob/s3"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// newBroker opens the shared storage with the control plane's own
// credentials and guards it for edges; nil when no storage is configured.
func newBroker(ctx context.Context, st *config.State, cfg *configstore.Store, opts Options, log *slog.Logger) (*broker.Server, error) {
	s := st.Storage
	if s == nil {
		return nil, nil
	}
	client, err := s3store.NewClient(ctx, s3store.Options{Endpoint: s.Endpoint, Region: s.Region, PathStyle: s.PathStyle,
		AccessKeyID: s.AccessKeyID.Reveal(), SecretAccessKey: s.SecretAccessKey.Reveal()})
	if err != nil {
		return nil, fmt.Errorf("storage broker: %w", err)
	}
	bucket, err := s3store.New(client, s.Bucket, s.Prefix)
	if err != nil {
		return nil, fmt.Errorf("storage broker: %w", err)
	}
	namespaceConfig := func(ns string) (*selfhostv1.EdgeConfig, bool) {
		n, ok := cfg.Current().Namespace(ns)
		if !ok {
			return nil, false
		}
		return n.Config, true
	}
	checker := proof.NewUpstreamChecker(namespaceConfig, log.With("component", "proof"))
	prover := proof.New(checker, bucket, proof.Options{TTL: opts.ProofTTL, Logger: log.With("component", "proof")})
	log.Info("storage broker on", "bucket", s.Bucket, "endpoint", s.Endpoint, "proof_ttl", opts.ProofTTL)
	return broker.New(bucket, prover, log), nil
}
