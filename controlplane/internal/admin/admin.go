// Package admin implements selfhost.v1.AdminService
// (docs/control-protocol.md), the operator's API for grpcurl. It reads the
// committed configuration and the connected edges through small interfaces,
// changes upstreams through the store (validated, persisted and pushed there)
// and the Clash mode and node through the clash manager, and is the only
// place where their errors become gRPC status codes. Responses never carry
// secrets: upstream credentials, pull tokens and proxy nodes' Clash maps are
// removed, and only "has_credentials"/"has_pull_token" say the first two
// exist.
package admin

import (
	"context"
	"log/slog"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/auth"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/snapshot"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// Config is the committed configuration and its changes (configstore.Store).
type Config interface {
	Current() *snapshot.Set
	PutUpstream(ctx context.Context, u *selfhostv1.Upstream) (*snapshot.Set, error)
	DeleteUpstream(ctx context.Context, prefix string) (*snapshot.Set, error)
}

// Edges are the connected edges (push.Server).
type Edges interface {
	Edges(namespace string) []*selfhostv1.EdgeStatus
	EdgeAddress(namespace string) string
	InvalidateTag(namespace string, tag *selfhostv1.InvalidateTag) int
}

// Service implements selfhostv1.AdminServiceServer.
type Service struct {
	selfhostv1.UnimplementedAdminServiceServer
	config  Config
	edges   Edges
	proxies Proxies    // nil: Clash is disabled
	nodes   NodeAccess // nil: standalone
	log     *slog.Logger
}

// Option configures a Service.
type Option func(*Service)

// WithProxies serves the proxy-node calls from p; without it they answer
// FailedPrecondition (Clash is not enabled).
func WithProxies(p Proxies) Option { return func(s *Service) { s.proxies = p } }

// New returns the admin service.
func New(config Config, edges Edges, log *slog.Logger, opts ...Option) *Service {
	s := &Service{config: config, edges: edges, log: log}
	for _, o := range opts {
		o(s)
	}
	return s
}

// ListEdges implements selfhostv1.AdminServiceServer.
func (s *Service) ListEdges(_ context.Context, req *selfhostv1.ListEdgesRequest) (*selfhostv1.ListEdgesResponse, error) {
	if req.GetNamespace() != "" {
		if _, err := s.namespace(req.GetNamespace()); err != nil {
			return nil, err
		}
	}
	return &selfhostv1.ListEdgesResponse{Edges: s.edges.Edges(req.GetNamespace())}, nil
}

// ListUpstreams implements selfhostv1.AdminServiceServer.
func (s *Service) ListUpstreams(context.Context, *selfhostv1.ListUpstreamsRequest) (*selfhostv1.ListUpstreamsResponse, error) {
	ups := s.config.Current().Upstreams // sorted by prefix
	out := make([]*selfhostv1.UpstreamInfo, len(ups))
	for i, u := range ups {
		out[i] = upstreamInfo(u)
	}
	return &selfhostv1.ListUpstreamsResponse{Upstreams: out}, nil
}

// PutUpstream implements selfhostv1.AdminServiceServer.
func (s *Service) PutUpstream(ctx context.Context, req *selfhostv1.PutUpstreamRequest) (*selfhostv1.PutUpstreamResponse, error) {
	if req.GetUpstream() == nil {
		return nil, invalid("upstream: missing")
	}
	set, err := s.config.PutUpstream(ctx, req.GetUpstream())
	if err != nil {
		return nil, s.toStatus(ctx, "PutUpstream", err)
	}
	s.log.Info("upstream stored", "prefix", req.GetUpstream().GetPrefix(), "config_version", set.Version, "by", caller(ctx))
	return &selfhostv1.PutUpstreamResponse{Upstream: upstreamInfo(req.GetUpstream()), ConfigVersion: set.Version}, nil
}

// DeleteUpstream implements selfhostv1.AdminServiceServer.
func (s *Service) DeleteUpstream(ctx context.Context, req *selfhostv1.DeleteUpstreamRequest) (*selfhostv1.DeleteUpstreamResponse, error) {
	set, err := s.config.DeleteUpstream(ctx, req.GetPrefix())
	if err != nil {
		return nil, s.toStatus(ctx, "DeleteUpstream", err)
	}
	s.log.Info("upstream deleted", "prefix", req.GetPrefix(), "config_version", set.Version, "by", caller(ctx))
	return &selfhostv1.DeleteUpstreamResponse{ConfigVersion: set.Version}, nil
}

// GetNamespaceConfig implements selfhostv1.AdminServiceServer.
func (s *Service) GetNamespaceConfig(_ context.Context, req *selfhostv1.GetNamespaceConfigRequest) (*selfhostv1.GetNamespaceConfigResponse, error) {
	ns, err := s.namespace(req.GetNamespace())
	if err != nil {
		return nil, err
	}
	return &selfhostv1.GetNamespaceConfigResponse{
		Config:       withoutSecrets(ns.Config),
		HasPullToken: ns.Config.GetPolicy().GetPullToken() != "",
	}, nil
}

// GetCacheStats implements selfhostv1.AdminServiceServer.
func (s *Service) GetCacheStats(_ context.Context, req *selfhostv1.GetCacheStatsRequest) (*selfhostv1.GetCacheStatsResponse, error) {
	if req.GetNamespace() != "" {
		if _, err := s.namespace(req.GetNamespace()); err != nil {
			return nil, err
		}
	}
	edges := s.edges.Edges(req.GetNamespace())
	total := &selfhostv1.EdgeStats{}
	for _, e := range edges {
		st := e.GetStats()
		total.CacheHits += st.GetCacheHits()
		total.CacheMisses += st.GetCacheMisses()
		total.BytesFromCache += st.GetBytesFromCache()
		total.BytesFromUpstream += st.GetBytesFromUpstream()
		total.StaleServes += st.GetStaleServes()
	}
	return &selfhostv1.GetCacheStatsResponse{Total: total, Edges: uint32(len(edges))}, nil
}

// namespace looks a namespace up in the committed configuration.
func (s *Service) namespace(name string) (*snapshot.Namespace, error) {
	if name == "" {
		return nil, invalid("namespace: must not be empty")
	}
	ns, ok := s.config.Current().Namespace(name)
	if !ok {
		return nil, notFound("namespace: %q is not configured", name)
	}
	return ns, nil
}

// caller names the authenticated caller for logs.
func caller(ctx context.Context) string {
	if id, ok := auth.FromContext(ctx); ok {
		return id.Name
	}
	return "unknown"
}
