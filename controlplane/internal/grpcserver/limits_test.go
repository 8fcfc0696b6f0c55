package grpcserver_test

import (
	"strings"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/grpcserver"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/grpcserver/servertest"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/snapshot"
)

// TestUpstreamLimitsReachEdges: the control plane's default upstream
// limits (--namespace-max-upstream-rps, --namespace-upstream-burst) are in
// the policy an edge receives, and a namespace's own YAML values win.
func TestUpstreamLimitsReachEdges(t *testing.T) {
	t.Parallel()
	cfg := strings.Replace(servertest.DefaultConfig, "    allowedPrefixes: [ghcr]\n",
		"    allowedPrefixes: [ghcr]\n    maxUpstreamRequestsPerSecond: 3\n", 1)
	env := servertest.Start(t, servertest.Options{Config: cfg, Server: func(o *grpcserver.Options) {
		o.UpstreamLimits = snapshot.UpstreamLimits{RPS: 20, Burst: 40}
	}})
	for _, tc := range []struct {
		ns              string
		wantRPS, wantBu uint32
	}{{"team-a", 20, 40}, {"team-b", 3, 40}} {
		e := servertest.OpenEdge(t, env.Conn, servertest.EdgeToken(tc.ns), servertest.Hello(tc.ns, "p", ""))
		p := e.NextConfig(t).GetPolicy()
		if p.GetMaxUpstreamRequestsPerSecond() != tc.wantRPS || p.GetUpstreamBurst() != tc.wantBu {
			t.Errorf("%s: policy %v, want rps %d burst %d", tc.ns, p, tc.wantRPS, tc.wantBu)
		}
	}
}
