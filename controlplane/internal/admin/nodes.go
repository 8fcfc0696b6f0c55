package admin

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/nodeaccess"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// NodeAccess is the injector's node-access check (nodeaccess.Gate, or a
// nodeaccess.Late until the in-cluster runtime exists).
type NodeAccess interface {
	Mode() nodeaccess.Mode
	Nodes() ([]nodeaccess.Node, error)
	NotReady() string
}

// WithNodeAccess serves ListNodes from n; without it ListNodes answers
// FailedPrecondition (standalone: there are no nodes).
func WithNodeAccess(n NodeAccess) Option { return func(s *Service) { s.nodes = n } }

// ListNodes implements selfhostv1.AdminServiceServer.
func (s *Service) ListNodes(context.Context, *selfhostv1.ListNodesRequest) (*selfhostv1.ListNodesResponse, error) {
	if s.nodes == nil || s.nodes.Mode() == "" {
		return nil, status.Error(codes.FailedPrecondition, "list nodes: not running in a cluster")
	}
	nodes, err := s.nodes.Nodes()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "list nodes: %v", err)
	}
	out := &selfhostv1.ListNodesResponse{NodeAccess: string(s.nodes.Mode()), NotReady: s.nodes.NotReady()}
	for _, n := range nodes {
		out.Nodes = append(out.Nodes, &selfhostv1.NodeAccessStatus{Name: n.Name, Schedulable: n.Schedulable,
			ForwarderPod: n.Forwarder, ForwarderReady: n.ForwarderReady})
	}
	return out, nil
}
