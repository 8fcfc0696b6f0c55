package snapshot

import (
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
)

// TestUpstreamLimits: a namespace's own limits win over the Builder's
// defaults, which win over zero (the edge's default).
func TestUpstreamLimits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		ns             config.Namespace
		defaults       UpstreamLimits
		wantRPS, wantB uint32
	}{
		{"nothing set: the edge's defaults", config.Namespace{}, UpstreamLimits{}, 0, 0},
		{"control plane defaults", config.Namespace{}, UpstreamLimits{RPS: 50, Burst: 100}, 50, 100},
		{"namespace's own", config.Namespace{MaxUpstreamRPS: 5, UpstreamBurst: 10}, UpstreamLimits{RPS: 50, Burst: 100}, 5, 10},
		{"mixed", config.Namespace{MaxUpstreamRPS: 5}, UpstreamLimits{Burst: 100}, 5, 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := baseState()
			ns := tc.ns
			st.Namespaces["team-a"] = &ns
			set, err := Builder{Limits: tc.defaults}.Build(st)
			if err != nil {
				t.Fatal(err)
			}
			a, _ := set.Namespace("team-a")
			p := a.Config.GetPolicy()
			if p.GetMaxUpstreamRequestsPerSecond() != tc.wantRPS || p.GetUpstreamBurst() != tc.wantB {
				t.Fatalf("policy %v, want rps %d burst %d", p, tc.wantRPS, tc.wantB)
			}
		})
	}
	// The limits are part of the version: changing them pushes.
	st := baseState()
	v1, _ := Builder{}.Build(st)
	v2, _ := Builder{Limits: UpstreamLimits{RPS: 1}}.Build(st)
	a1, _ := v1.Namespace("team-a")
	a2, _ := v2.Namespace("team-a")
	if a1.Config.GetVersion() == a2.Config.GetVersion() {
		t.Fatal("a new rate limit did not change the namespace's version")
	}
}
