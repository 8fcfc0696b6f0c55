package snapshot

import (
	"slices"
	"strings"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/injector/rewrite"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/configspec"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

// credState: the operator has credentials for dockerhub and ghcr; team-a
// may use everything, team-b only ghcr, team-c has its own Docker Hub and
// quay credentials (and some for a registry no upstream serves), team-d
// has its own for dockerhub but may use only ghcr.
func credState() *config.State {
	ups := configspec.DefaultUpstreams()
	ups[0].Credentials = &selfhostv1.Credentials{Username: "op-hub", Password: "op-hub-pw"}
	ups[1].Credentials = &selfhostv1.Credentials{Username: "op-ghcr", Password: "op-ghcr-pw"}
	return &config.State{
		Upstreams: ups,
		Namespaces: map[string]*config.Namespace{
			"team-a": {},
			"team-b": {AllowedPrefixes: []string{"ghcr"}},
			"team-c": {RegistryCredentials: map[string]config.Credentials{
				"index.docker.io":  {Username: "c-hub", Password: "c-hub-pw"},
				"quay.io":          {Username: "c-quay", Password: "c-quay-pw"},
				"registry.example": {Username: "c-x", Password: "c-x-pw"},
			}},
			"team-d": {AllowedPrefixes: []string{"ghcr"}, RegistryCredentials: map[string]config.Credentials{
				"docker.io": {Username: "d-hub", Password: "d-hub-pw"},
			}},
		},
	}
}

// creds renders a namespace's upstreams as "prefix=user" ("prefix=" when
// it has none), in order.
func creds(c *selfhostv1.EdgeConfig) string {
	var out []string
	for _, u := range c.GetUpstreams() {
		out = append(out, u.GetPrefix()+"="+u.GetCredentials().GetUsername())
	}
	return strings.Join(out, ",")
}

func TestNamespaceUpstreams(t *testing.T) {
	t.Parallel()
	set := mustBuild(t, credState())
	tests := []struct {
		ns   string
		want string
	}{
		{"team-a", "dockerhub=op-hub,ghcr=op-ghcr,k8s=,quay="},
		// Not dockerhub, nor its credentials: team-b may not use it.
		{"team-b", "ghcr=op-ghcr"},
		// index.docker.io is Docker Hub; the registry no upstream serves
		// is ignored.
		{"team-c", "dockerhub=c-hub,ghcr=op-ghcr,k8s=,quay=c-quay"},
		// Its own Docker Hub credentials do not bring dockerhub in.
		{"team-d", "ghcr=op-ghcr"},
	}
	for _, tc := range tests {
		t.Run(tc.ns, func(t *testing.T) {
			t.Parallel()
			ns, ok := set.Namespace(tc.ns)
			if !ok {
				t.Fatal("namespace missing")
			}
			if got := creds(ns.Config); got != tc.want {
				t.Fatalf("upstreams %s, want %s", got, tc.want)
			}
			if err := configspec.ValidateEdgeConfig(ns.Config); err != nil {
				t.Fatal(err)
			}
		})
	}
	// The global list and the shared messages keep the operator's.
	if got := creds(&selfhostv1.EdgeConfig{Upstreams: set.Upstreams}); got != "dockerhub=op-hub,ghcr=op-ghcr,k8s=,quay=" {
		t.Fatalf("Set.Upstreams %s", got)
	}
	a, _ := set.Namespace("team-a")
	c, _ := set.Namespace("team-c")
	if a.Config.Upstreams[0] != set.Upstreams[0] {
		t.Error("team-a does not share the Set's upstream messages")
	}
	if c.Config.Upstreams[0] == set.Upstreams[0] || c.Config.Upstreams[1] != set.Upstreams[1] {
		t.Error("team-c: want a clone for dockerhub only, shared ghcr")
	}
}

// Credentials an edge would refuse are not applied, and do not make the
// Set invalid for everyone else.
func TestNamespaceUpstreamsUnusableCredentials(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		c    config.Credentials
	}{
		{"no password", config.Credentials{Username: "u"}},
		{"no user", config.Credentials{Password: "p"}},
		{"too long", config.Credentials{Username: "u", Password: config.Secret(strings.Repeat("p", configspec.MaxSecretBytes))}},
		{"not UTF-8", config.Credentials{Username: "u", Password: "\xff"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := credState()
			st.Namespaces["team-a"].RegistryCredentials = map[string]config.Credentials{"ghcr.io": tc.c}
			a, _ := mustBuild(t, st).Namespace("team-a")
			if got := creds(a.Config); got != "dockerhub=op-hub,ghcr=op-ghcr,k8s=,quay=" {
				t.Fatalf("upstreams %s", got)
			}
		})
	}
}

func TestUpstreamHosts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		u    *selfhostv1.Upstream
		want []string
	}{
		{configspec.DefaultUpstreams()[0], []string{"registry-1.docker.io", "docker.io", "index.docker.io"}},
		{&selfhostv1.Upstream{Url: "https://GHCR.io:443"}, []string{"ghcr.io:443", "ghcr.io"}},
		{&selfhostv1.Upstream{Url: "http://10.0.0.5:5000", Hosts: []string{"Mirror.Example"}}, []string{"10.0.0.5:5000", "mirror.example"}},
		{&selfhostv1.Upstream{Url: "https://hub.example", Hosts: []string{"docker.io"}}, []string{"hub.example", "docker.io", "index.docker.io", "registry-1.docker.io"}},
	}
	for _, tc := range tests {
		if got := UpstreamHosts(tc.u); !slices.Equal(got, tc.want) {
			t.Errorf("UpstreamHosts(%s) = %v, want %v", tc.u.GetUrl(), got, tc.want)
		}
	}
}

// The injector rewrites only to the namespace's allowed prefixes, whatever
// upstreams the Set has.
func TestRewriteRulesAllowedOnly(t *testing.T) {
	t.Parallel()
	set := mustBuild(t, credState())
	b, _ := set.Namespace("team-b")
	rw, err := rewrite.New(set.RewriteRules(b, "127.0.0.1:30500"))
	if err != nil {
		t.Fatal(err)
	}
	for image, want := range map[string]string{
		"ghcr.io/org/app:v1": "127.0.0.1:30500/ghcr/org/app:v1",
		"nginx:1":            "nginx:1",
		"quay.io/org/app:v1": "quay.io/org/app:v1",
	} {
		if got := rw.Rewrite(image).Rewritten; got != want {
			t.Errorf("%s → %s, want %s", image, got, want)
		}
	}
}
