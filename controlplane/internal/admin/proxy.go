package admin

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/clash"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// Proxies are the Clash nodes and their selection (clash.Manager).
type Proxies interface {
	Status() clash.Status
	Select(ctx context.Context, name string) (clash.NodeStatus, error)
	SetMode(ctx context.Context, mode selfhostv1.ProxyMode) (selfhostv1.ProxyMode, error)
	Refresh(ctx context.Context) (clash.RefreshResult, error)
}

var errClashDisabled = status.Error(codes.FailedPrecondition, "Clash is not enabled: set clash.enabled and clash.subscriptionUrl in the control plane's configuration")

// ListProxyNodes implements selfhostv1.AdminServiceServer.
func (s *Service) ListProxyNodes(context.Context, *selfhostv1.ListProxyNodesRequest) (*selfhostv1.ListProxyNodesResponse, error) {
	if s.proxies == nil {
		return nil, errClashDisabled
	}
	st := s.proxies.Status()
	resp := &selfhostv1.ListProxyNodesResponse{
		Mode:              st.Mode,
		Skipped:           skippedNodes(st.Skipped),
		SubscriptionError: st.FetchError,
	}
	if !st.Fetched.IsZero() {
		resp.SubscriptionFetched = timestamppb.New(st.Fetched)
	}
	for _, n := range st.Nodes {
		resp.Nodes = append(resp.Nodes, nodeStatus(n))
	}
	return resp, nil
}

// SelectProxyNode implements selfhostv1.AdminServiceServer.
func (s *Service) SelectProxyNode(ctx context.Context, req *selfhostv1.SelectProxyNodeRequest) (*selfhostv1.SelectProxyNodeResponse, error) {
	if s.proxies == nil {
		return nil, errClashDisabled
	}
	if req.GetName() == "" {
		return nil, invalid("name: must not be empty")
	}
	n, err := s.proxies.Select(ctx, req.GetName())
	if err != nil {
		return nil, s.proxyStatus(ctx, "SelectProxyNode", err)
	}
	s.log.Info("proxy node pinned", "node", n.Name, "by", caller(ctx))
	return &selfhostv1.SelectProxyNodeResponse{Selected: nodeStatus(n)}, nil
}

// SetProxyMode implements selfhostv1.AdminServiceServer.
func (s *Service) SetProxyMode(ctx context.Context, req *selfhostv1.SetProxyModeRequest) (*selfhostv1.SetProxyModeResponse, error) {
	if s.proxies == nil {
		return nil, errClashDisabled
	}
	switch req.GetMode() {
	case selfhostv1.ProxyMode_PROXY_MODE_AUTO, selfhostv1.ProxyMode_PROXY_MODE_PINNED, selfhostv1.ProxyMode_PROXY_MODE_DIRECT:
	default:
		return nil, invalid("mode: want PROXY_MODE_AUTO, PROXY_MODE_PINNED or PROXY_MODE_DIRECT")
	}
	mode, err := s.proxies.SetMode(ctx, req.GetMode())
	if err != nil {
		return nil, s.proxyStatus(ctx, "SetProxyMode", err)
	}
	s.log.Info("proxy mode set", "mode", mode.String(), "by", caller(ctx))
	return &selfhostv1.SetProxyModeResponse{Mode: mode}, nil
}

// RefreshSubscription implements selfhostv1.AdminServiceServer.
func (s *Service) RefreshSubscription(ctx context.Context, _ *selfhostv1.RefreshSubscriptionRequest) (*selfhostv1.RefreshSubscriptionResponse, error) {
	if s.proxies == nil {
		return nil, errClashDisabled
	}
	res, err := s.proxies.Refresh(ctx)
	if err != nil {
		return nil, s.proxyStatus(ctx, "RefreshSubscription", err)
	}
	s.log.Info("subscription refreshed", "nodes", res.Nodes, "skipped", len(res.Skipped), "by", caller(ctx))
	return &selfhostv1.RefreshSubscriptionResponse{Nodes: uint32(res.Nodes), Skipped: skippedNodes(res.Skipped)}, nil
}

// proxyStatus translates the clash manager's errors. Their messages are
// already free of secrets (the subscription URL, node passwords).
func (s *Service) proxyStatus(ctx context.Context, method string, err error) error {
	switch {
	case errors.Is(err, clash.ErrUnknownNode):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, clash.ErrNoPinnedNode):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, clash.ErrSubscription):
		return status.Error(codes.Unavailable, err.Error()+"; the node pool in use is kept")
	}
	return s.toStatus(ctx, method, err)
}

func nodeStatus(n clash.NodeStatus) *selfhostv1.ProxyNodeStatus {
	out := &selfhostv1.ProxyNodeStatus{
		Name:      n.Name,
		Type:      n.Type,
		Server:    n.Server,
		Alive:     n.Alive,
		LastError: n.LastError,
		Selected:  n.Selected,
	}
	if n.Alive {
		out.Latency = durationpb.New(n.Latency)
	}
	if !n.LastChecked.IsZero() {
		out.LastChecked = timestamppb.New(n.LastChecked)
	}
	for _, d := range n.History {
		out.History = append(out.History, durationpb.New(d))
	}
	return out
}

func skippedNodes(sk []clash.Skipped) []*selfhostv1.SkippedNode {
	out := make([]*selfhostv1.SkippedNode, len(sk))
	for i, s := range sk {
		out[i] = &selfhostv1.SkippedNode{Name: s.Name, Reason: s.Reason}
	}
	return out
}
