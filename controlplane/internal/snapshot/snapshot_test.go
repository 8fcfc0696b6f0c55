package snapshot

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/configspec"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

func baseState() *config.State {
	return &config.State{
		Upstreams: configspec.DefaultUpstreams(),
		Namespaces: map[string]*config.Namespace{
			"team-a": {PullToken: "pull-a", EdgeAddress: "127.0.0.1:5000"},
			"team-b": {AllowedPrefixes: []string{"ghcr"}},
		},
	}
}

func mustBuild(t *testing.T, st *config.State) *Set {
	t.Helper()
	set, err := Builder{}.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func TestBuild(t *testing.T) {
	t.Parallel()
	set := mustBuild(t, baseState())
	if got := strings.Join(set.NamespaceNames(), ","); got != "team-a,team-b" {
		t.Fatalf("namespaces %s", got)
	}
	a, _ := set.Namespace("team-a")
	if a.Config.GetPolicy().GetPullToken() != "pull-a" || a.EdgeAddress != "127.0.0.1:5000" || a.Config.GetNonce() != "" {
		t.Fatalf("team-a = %v", a.Config)
	}
	var prefixes []string
	for _, u := range a.Config.GetUpstreams() {
		prefixes = append(prefixes, u.GetPrefix())
	}
	if strings.Join(prefixes, ",") != "dockerhub,ghcr,k8s,quay" {
		t.Fatalf("upstreams not sorted: %v", prefixes)
	}
	if err := configspec.ValidateEdgeConfig(a.Config); err != nil {
		t.Fatal(err)
	}
}

func TestVersions(t *testing.T) {
	t.Parallel()
	base := mustBuild(t, baseState())
	if again := mustBuild(t, baseState()); again.Version != base.Version {
		t.Fatal("same state, different global version")
	}
	tests := []struct {
		name    string
		mutate  func(st *config.State)
		changed string // namespaces whose version must change
	}{
		{"upstream order", func(st *config.State) {
			st.Upstreams[0], st.Upstreams[1] = st.Upstreams[1], st.Upstreams[0]
		}, ""},
		// team-b may use ghcr only: another upstream is not its business.
		{"add upstream", func(st *config.State) {
			st.Upstreams = append(st.Upstreams, &selfhostv1.Upstream{Prefix: "gcr", Url: "https://gcr.io"})
		}, "team-a"},
		{"dockerhub credentials", func(st *config.State) {
			st.Upstreams[0].Credentials = &selfhostv1.Credentials{Username: "u", Password: "p"}
		}, "team-a"},
		{"team-b's own credentials", func(st *config.State) {
			st.Namespaces["team-b"].RegistryCredentials = map[string]config.Credentials{"ghcr.io": {Username: "b", Password: "pb"}}
		}, "team-b"},
		{"credentials", func(st *config.State) {
			st.Upstreams[1].Credentials = &selfhostv1.Credentials{Username: "u", Password: "p"}
		}, "team-a,team-b"},
		{"team-a pull token", func(st *config.State) { st.Namespaces["team-a"].PullToken = "other" }, "team-a"},
		{"team-b policy", func(st *config.State) { st.Namespaces["team-b"].AllowedPrefixes = nil }, "team-b"},
		{"add namespace", func(st *config.State) { st.Namespaces["team-c"] = &config.Namespace{} }, "team-c"},
		{"remove namespace", func(st *config.State) { delete(st.Namespaces, "team-b") }, "team-b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := baseState()
			tc.mutate(st)
			next := mustBuild(t, st)
			if got := strings.Join(ChangedNamespaces(base, next), ","); got != tc.changed {
				t.Fatalf("changed %q, want %q", got, tc.changed)
			}
			if (next.Version != base.Version) != (tc.changed != "") {
				t.Fatalf("global version %s → %s", base.Version, next.Version)
			}
		})
	}
	// The edge address is not part of the EdgeConfig, but it is part of
	// the global version.
	st := baseState()
	st.Namespaces["team-a"].EdgeAddress = "127.0.0.1:5999"
	if next := mustBuild(t, st); next.Version == base.Version || len(ChangedNamespaces(base, next)) != 0 {
		t.Fatal("edge address change not reflected")
	}
}

func TestVersionIgnoresNonce(t *testing.T) {
	t.Parallel()
	a, _ := mustBuild(t, baseState()).Namespace("team-a")
	withNonce := WithNonce(a.Config, "n-1")
	if v, err := Version(withNonce); err != nil || v != a.Config.GetVersion() {
		t.Fatalf("Version with nonce = %s, %v; want %s", v, err, a.Config.GetVersion())
	}
}

// WithNonce must copy every field, including fields added to the proto
// later: compare every populated field through reflection.
func TestWithNonceCopiesEveryField(t *testing.T) {
	t.Parallel()
	a, _ := mustBuild(t, clashState()).Namespace("team-a")
	src := proto.CloneOf(a.Config)
	src.Nonce = "old"
	got := WithNonce(src, "new")
	if got.GetNonce() != "new" || src.GetNonce() != "old" {
		t.Fatal("nonce not replaced, or source modified")
	}
	got.Nonce = "old"
	if !proto.Equal(got, src) {
		t.Fatalf("copy differs:\n%v\n%v", got, src)
	}
	fields := src.ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !src.ProtoReflect().Has(fd) && fd.Name() != protoreflect.Name("nonce") {
			t.Errorf("test config leaves field %s empty; populate it so the copy is checked", fd.Name())
		}
	}
}

func TestBuildRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(st *config.State)
		want   string
	}{
		{"bad namespace name", func(st *config.State) { st.Namespaces["Team A"] = &config.Namespace{} }, `namespace "Team A"`},
		{"allowed prefix not configured", func(st *config.State) { st.Namespaces["team-b"].AllowedPrefixes = []string{"gcr"} }, "policy.allowed_prefixes[0]"},
		{"duplicate prefix", func(st *config.State) {
			st.Upstreams = append(st.Upstreams, &selfhostv1.Upstream{Prefix: "ghcr", Url: "https://x.io"})
		}, "prefix \"ghcr\" already used"},
		{"host claimed twice", func(st *config.State) {
			st.Upstreams = append(st.Upstreams, &selfhostv1.Upstream{Prefix: "hub2", Url: "https://x.io", Hosts: []string{"docker.io"}})
		}, "already selects upstream"},
		{"host is another URL host", func(st *config.State) {
			st.Upstreams = append(st.Upstreams, &selfhostv1.Upstream{Prefix: "g2", Url: "https://x.io", Hosts: []string{"GHCR.io"}})
		}, "URL host of upstream \"ghcr\""},
		{"snapshot too large", func(st *config.State) {
			// Each upstream is under 1 MiB (one PutUpstream), the sum is not.
			for i := range 5 {
				u := &selfhostv1.Upstream{Prefix: fmt.Sprintf("big%d", i), Url: fmt.Sprintf("https://big%d.io", i)}
				for j := range 500 {
					u.Hosts = append(u.Hosts, fmt.Sprintf("%d-%d.%s", i, j, strings.Repeat("h", 1900)))
				}
				st.Upstreams = append(st.Upstreams, u)
			}
		}, "more than the 4194304 an edge accepts"},
		{"bad upstream with no namespaces", func(st *config.State) {
			st.Namespaces = nil
			st.Upstreams = append(st.Upstreams, &selfhostv1.Upstream{Prefix: "v2", Url: "https://x.io"})
		}, "reserved"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := baseState()
			tc.mutate(st)
			_, err := Builder{}.Build(st)
			if !errors.Is(err, configspec.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalid containing %q", err, tc.want)
			}
		})
	}
}
