package grpcserver_test

import (
	"os"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/grpcserver/servertest"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

func TestPutUpstreamRefusesBadInput(t *testing.T) {
	t.Parallel()
	env := start(t)
	edge := servertest.OpenEdge(t, env.Conn, servertest.EdgeToken("team-a"), servertest.Hello("team-a", "a", ""))
	edge.NextConfig(t)
	before := env.Server.Store().Current().Version

	tests := []struct {
		name  string
		up    *selfhostv1.Upstream
		field string
	}{
		{"missing", nil, "upstream: missing"},
		{"bad scheme", &selfhostv1.Upstream{Prefix: "x", Url: "ftp://x.io"}, "upstream.url"},
		{"url with path", &selfhostv1.Upstream{Prefix: "x", Url: "https://x.io/v2"}, "upstream.url"},
		{"url with credentials", &selfhostv1.Upstream{Prefix: "x", Url: "https://u:pw@x.io"}, "upstream.url"},
		{"no host", &selfhostv1.Upstream{Prefix: "x", Url: "https://"}, "upstream.url"},
		{"reserved prefix", &selfhostv1.Upstream{Prefix: "library", Url: "https://x.io"}, "upstream.prefix"},
		{"upper-case prefix", &selfhostv1.Upstream{Prefix: "X", Url: "https://x.io"}, "upstream.prefix"},
		{"empty prefix", &selfhostv1.Upstream{Url: "https://x.io"}, "upstream.prefix"},
		{"prefix is another's alias", &selfhostv1.Upstream{Prefix: "quayio", Url: "https://x.io"}, "upstream.prefix"},
		{"alias is another's prefix", &selfhostv1.Upstream{Prefix: "x", Aliases: []string{"ghcr"}, Url: "https://x.io"}, "upstream.aliases[0]"},
		{"alias twice", &selfhostv1.Upstream{Prefix: "x", Aliases: []string{"y", "y"}, Url: "https://x.io"}, "upstream.aliases[1]"},
		{"host claimed", &selfhostv1.Upstream{Prefix: "x", Url: "https://x.io", Hosts: []string{"docker.io"}}, "upstream.hosts[0]"},
		{"host is a URL host", &selfhostv1.Upstream{Prefix: "x", Url: "https://x.io", Hosts: []string{"ghcr.io"}}, "upstream.hosts[0]"},
		{"bad host", &selfhostv1.Upstream{Prefix: "x", Url: "https://x.io", Hosts: []string{"a/b"}}, "upstream.hosts[0]"},
		{"half credentials", &selfhostv1.Upstream{Prefix: "x", Url: "https://x.io", Credentials: &selfhostv1.Credentials{Password: servertest.UpstreamSecret}}, "upstream.credentials"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := env.Admin.PutUpstream(adminCtx(t), &selfhostv1.PutUpstreamRequest{Upstream: tc.up})
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.field) {
				t.Fatalf("err = %v, want InvalidArgument naming %q", err, tc.field)
			}
			if strings.Contains(err.Error(), servertest.UpstreamSecret) || strings.Contains(err.Error(), ":pw@") {
				t.Fatalf("error leaks a secret: %v", err)
			}
		})
	}
	t.Cleanup(func() {
		// Nothing half-applied: same version, nothing pushed, nothing saved.
		if got := env.Server.Store().Current().Version; got != before {
			t.Errorf("config version changed: %s → %s", before, got)
		}
		edge.ExpectNothing(t, quiet)
		if _, err := os.Stat(env.StatePath()); !os.IsNotExist(err) {
			t.Errorf("state file written: %v", err)
		}
	})
}

func TestDeleteUpstream(t *testing.T) {
	t.Parallel()
	env := start(t)
	// team-a may use every upstream, so every deletion reaches its edge.
	edge := servertest.OpenEdge(t, env.Conn, servertest.EdgeToken("team-a"), servertest.Hello("team-a", "a", ""))
	edge.NextConfig(t)
	tests := []struct {
		prefix string
		code   codes.Code
		msg    string
	}{
		{"", codes.InvalidArgument, "prefix: must not be empty"},
		{"nope", codes.NotFound, `no upstream "nope"`},
		{"quayio", codes.NotFound, `no upstream "quayio"`}, // aliases are not deletable names
		{"ghcr", codes.FailedPrecondition, "namespaces.team-b.allowedPrefixes"},
	}
	for _, tc := range tests {
		_, err := env.Admin.DeleteUpstream(adminCtx(t), &selfhostv1.DeleteUpstreamRequest{Prefix: tc.prefix})
		if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
			t.Errorf("DeleteUpstream(%q) = %v, want %s containing %q", tc.prefix, err, tc.code, tc.msg)
		}
	}
	edge.ExpectNothing(t, quiet)

	resp, err := env.Admin.DeleteUpstream(adminCtx(t), &selfhostv1.DeleteUpstreamRequest{Prefix: "k8s"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := edge.NextConfig(t)
	for _, u := range cfg.GetUpstreams() {
		if u.GetPrefix() == "k8s" {
			t.Fatal("deleted upstream still pushed")
		}
	}
	if resp.GetConfigVersion() != env.Server.Store().Current().Version {
		t.Errorf("config_version %s, store %s", resp.GetConfigVersion(), env.Server.Store().Current().Version)
	}
}

func TestUnknownNamespace(t *testing.T) {
	t.Parallel()
	env := start(t)
	ctx := adminCtx(t)
	calls := map[string]func() error{
		"GetNamespaceConfig": func() error {
			_, err := env.Admin.GetNamespaceConfig(ctx, &selfhostv1.GetNamespaceConfigRequest{Namespace: "team-z"})
			return err
		},
		"Resolve": func() error {
			_, err := env.Admin.Resolve(ctx, &selfhostv1.ResolveRequest{Namespace: "team-z", Image: "nginx"})
			return err
		},
		"InvalidateTag": func() error {
			_, err := env.Admin.InvalidateTag(ctx, &selfhostv1.InvalidateTagRequest{Namespace: "team-z", Tag: &selfhostv1.InvalidateTag{Prefix: "ghcr", Repository: "o/r", Tag: "t"}})
			return err
		},
		"ListEdges": func() error {
			_, err := env.Admin.ListEdges(ctx, &selfhostv1.ListEdgesRequest{Namespace: "team-z"})
			return err
		},
		"GetCacheStats": func() error {
			_, err := env.Admin.GetCacheStats(ctx, &selfhostv1.GetCacheStatsRequest{Namespace: "team-z"})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := call()
			if status.Code(err) != codes.NotFound || !strings.Contains(status.Convert(err).Message(), `namespace: "team-z" is not configured`) {
				t.Fatalf("err = %v, want NotFound naming the namespace", err)
			}
		})
	}
}

func TestInvalidateTagRefusesBadInput(t *testing.T) {
	t.Parallel()
	env := start(t)
	tests := []struct {
		tag   *selfhostv1.InvalidateTag
		field string
	}{
		{nil, "tag: missing"},
		{&selfhostv1.InvalidateTag{Prefix: "gcr", Repository: "o/r", Tag: "t"}, "tag.prefix"},
		{&selfhostv1.InvalidateTag{Prefix: "ghcr", Repository: "O//r", Tag: "t"}, "tag.repository"},
		{&selfhostv1.InvalidateTag{Prefix: "ghcr", Repository: "o/r", Tag: ":bad"}, "tag.tag"},
	}
	for _, tc := range tests {
		_, err := env.Admin.InvalidateTag(adminCtx(t), &selfhostv1.InvalidateTagRequest{Namespace: "team-a", Tag: tc.tag})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.field) {
			t.Errorf("InvalidateTag(%v) = %v, want InvalidArgument naming %q", tc.tag, err, tc.field)
		}
	}
}

func TestResolve(t *testing.T) {
	t.Parallel()
	env := start(t)
	tests := []struct {
		name, ns, image string
		want            *selfhostv1.ResolveResponse
	}{
		{"docker hub short name", "team-a", "nginx", &selfhostv1.ResolveResponse{
			Rewritten: servertest.EdgeAddressA + "/dockerhub/library/nginx:latest", Normalized: "docker.io/library/nginx:latest",
			Prefix: "dockerhub", UpstreamUrl: "https://registry-1.docker.io/v2/library/nginx/manifests/latest",
		}},
		{"ghcr in team-b", "team-b", "ghcr.io/o/r:1", &selfhostv1.ResolveResponse{
			Rewritten: servertest.EdgeAddressB + "/ghcr/o/r:1", Normalized: "ghcr.io/o/r:1",
			Prefix: "ghcr", UpstreamUrl: "https://ghcr.io/v2/o/r/manifests/1",
		}},
		{"not allowed in team-b", "team-b", "nginx", &selfhostv1.ResolveResponse{
			Rewritten: "nginx", Normalized: "docker.io/library/nginx:latest",
			UntouchedReason: `upstream "dockerhub" is not in the namespace's allowed prefixes`,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := env.Admin.Resolve(adminCtx(t), &selfhostv1.ResolveRequest{Namespace: tc.ns, Image: tc.image})
			if err != nil || !proto.Equal(got, tc.want) {
				t.Fatalf("Resolve = %v, %v\nwant %v", got, err, tc.want)
			}
		})
	}
	if _, err := env.Admin.Resolve(adminCtx(t), &selfhostv1.ResolveRequest{Namespace: "team-a"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("empty image: %v, want InvalidArgument", err)
	}
}

func TestResolvePrefersConnectedEdgeAddress(t *testing.T) {
	t.Parallel()
	env := start(t)
	edge := servertest.OpenEdge(t, env.Conn, servertest.EdgeToken("team-a"), servertest.Hello("team-a", "a", "127.0.0.1:31999"))
	edge.NextConfig(t)
	got, err := env.Admin.Resolve(adminCtx(t), &selfhostv1.ResolveRequest{Namespace: "team-a", Image: "ghcr.io/o/r@sha256:" + strings.Repeat("a", 64)})
	if err != nil || got.GetRewritten() != "127.0.0.1:31999/ghcr/o/r@sha256:"+strings.Repeat("a", 64) {
		t.Fatalf("Resolve = %v, %v", got, err)
	}
}

func TestResolveIgnoresWildcardEdgeAddress(t *testing.T) {
	t.Parallel()
	env := start(t)
	edge := servertest.OpenEdge(t, env.Conn, servertest.EdgeToken("team-a"), servertest.Hello("team-a", "a", "[::]:5000"))
	edge.NextConfig(t)
	got, err := env.Admin.Resolve(adminCtx(t), &selfhostv1.ResolveRequest{Namespace: "team-a", Image: "nginx"})
	if err != nil || got.GetRewritten() != servertest.EdgeAddressA+"/dockerhub/library/nginx:latest" {
		t.Fatalf("Resolve = %v, %v; want the configured address", got, err)
	}
	if e := listEdges(t, env, "team-a"); len(e) != 1 || e[0].GetAddress() != "[::]:5000" {
		t.Fatalf("ListEdges = %v; want the reported address shown", e)
	}
}

func TestOversizedMessageIsResourceExhausted(t *testing.T) {
	t.Parallel()
	env := start(t)
	big := &selfhostv1.Upstream{Prefix: "x", Url: "https://x.io", Hosts: []string{strings.Repeat("h", 2<<20)}}
	_, err := env.Admin.PutUpstream(adminCtx(t), &selfhostv1.PutUpstreamRequest{Upstream: big})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("err = %v, want ResourceExhausted", err)
	}
	// Same for the edge stream.
	edge := servertest.OpenEdge(t, env.Conn, servertest.EdgeToken("team-a"), &selfhostv1.Hello{Pod: strings.Repeat("p", 2<<20)})
	if err := edge.Err(t); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("stream err = %v, want ResourceExhausted", err)
	}
}

func TestAdminAuth(t *testing.T) {
	t.Parallel()
	env := start(t)
	tests := []struct {
		name  string
		md    []string
		code  codes.Code
		inMsg string
	}{
		{"missing", nil, codes.Unauthenticated, "missing bearer token"},
		{"not bearer", []string{"authorization", "Basic " + servertest.AdminToken}, codes.Unauthenticated, "malformed"},
		{"empty bearer", []string{"authorization", "Bearer "}, codes.Unauthenticated, "malformed"},
		{"two values", []string{"authorization", "Bearer " + servertest.AdminToken, "authorization", "Bearer " + servertest.AdminToken}, codes.Unauthenticated, "malformed"},
		{"unknown", []string{"authorization", "Bearer not-a-known-token-123"}, codes.Unauthenticated, "unknown token"},
		{"edge token", []string{"authorization", "Bearer " + servertest.EdgeToken("team-a")}, codes.PermissionDenied, "edge token cannot call the admin API"},
		{"lower-case scheme", []string{"authorization", "bearer " + servertest.AdminToken}, codes.OK, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			if tc.md != nil {
				ctx = metadataContext(ctx, tc.md...)
			}
			_, err := env.Admin.ListUpstreams(ctx, &selfhostv1.ListUpstreamsRequest{})
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.inMsg) {
				t.Fatalf("err = %v, want %s containing %q", err, tc.code, tc.inMsg)
			}
			if err != nil && strings.Contains(err.Error(), servertest.AdminToken) {
				t.Fatalf("error echoes the token: %v", err)
			}
		})
	}
}
