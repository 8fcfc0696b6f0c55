package configclient

import (
	"context"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// failureQueue bounds the ProxyFailure reports waiting for the stream.
const failureQueue = 64

// ReportProxyFailure queues a ProxyFailure for the control plane and
// returns at once; it is called on the upstream dial path. Reports wait
// while the stream is down and are sent once it is up again. When the
// queue is full the report is dropped and false returned: the control plane
// re-probes on the reports it does get, so a burst from one dead node loses
// nothing of substance.
func (c *Client) ReportProxyFailure(f *selfhostv1.ProxyFailure) bool {
	select {
	case c.failures <- f:
		return true
	default:
		c.o.log.Debug("proxy failure report dropped: queue full", "node", f.GetNode(), "prefix", f.GetPrefix())
		return false
	}
}

// sendFailures sends queued reports until ctx ends or the stream breaks;
// the one report whose send failed is lost with the stream.
func (c *Client) sendFailures(ctx context.Context, s *sender) {
	for {
		select {
		case <-ctx.Done():
			return
		case f := <-c.failures:
			if err := s.send(&selfhostv1.StreamConfigRequest{Kind: &selfhostv1.StreamConfigRequest_ProxyFailure{ProxyFailure: f}}); err != nil {
				// The receive loop sees the broken stream and reconnects.
				return
			}
		}
	}
}
