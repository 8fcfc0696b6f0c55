package server

import (
	"cmp"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// UpstreamLimits are a namespace's upstream request rate (per second) and
// burst; zero rate is unlimited, zero burst is one second's worth.
type UpstreamLimits struct {
	RPS   int
	Burst int
}

// resolve is the rate and burst in effect under policy p: the policy's
// own values, each falling back to the edge's flags when zero.
func (l UpstreamLimits) resolve(p *selfhostv1.NamespacePolicy) (rate, burst int) {
	return cmp.Or(int(p.GetMaxUpstreamRequestsPerSecond()), l.RPS), cmp.Or(int(p.GetUpstreamBurst()), l.Burst)
}
