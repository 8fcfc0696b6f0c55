package grpcserver_test

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/grpcserver/servertest"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

func metadataContext(ctx context.Context, kv ...string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

func TestPersistenceAcrossRestart(t *testing.T) {
	t.Parallel()
	first := start(t)
	secret := "restart-secret-password"
	put := putUpstream(t, first, &selfhostv1.Upstream{
		Prefix: "gcr", Url: "https://gcr.io", Aliases: []string{"gcrio"},
		Credentials: &selfhostv1.Credentials{Username: "u", Password: secret}, TagTtl: durationpb.New(90e9),
	})
	if _, err := first.Admin.DeleteUpstream(adminCtx(t), &selfhostv1.DeleteUpstreamRequest{Prefix: "k8s"}); err != nil {
		t.Fatal(err)
	}
	wantVersion := first.Server.Store().Current().Version
	if wantVersion == put.GetConfigVersion() {
		t.Fatal("delete did not change the version")
	}
	fi, err := os.Stat(first.StatePath())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	first.Stop(t)

	second := servertest.Start(t, servertest.Options{Dir: first.Dir})
	if got := second.Server.Store().Current().Version; got != wantVersion {
		t.Fatalf("version after restart %s, want %s", got, wantVersion)
	}
	ups, err := second.Admin.ListUpstreams(adminCtx(t), &selfhostv1.ListUpstreamsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var prefixes []string
	for _, u := range ups.GetUpstreams() {
		prefixes = append(prefixes, u.GetPrefix())
	}
	if strings.Join(prefixes, ",") != "dockerhub,gcr,ghcr,quay,test" {
		t.Fatalf("upstreams after restart: %v", prefixes)
	}
	edge := servertest.OpenEdge(t, second.Conn, servertest.EdgeToken("team-a"), servertest.Hello("team-a", "a", ""))
	cfg := edge.NextConfig(t)
	for _, u := range cfg.GetUpstreams() {
		if u.GetPrefix() == "gcr" && (u.GetCredentials().GetPassword() != secret || u.GetTagTtl().AsDuration() != 90e9) {
			t.Fatalf("gcr after restart: %v", u)
		}
	}
}

// TestSecretsNeverReturned calls every admin method and searches the JSON
// of every response, and the whole log, for the secrets and tokens.
func TestSecretsNeverReturned(t *testing.T) {
	t.Parallel()
	env := start(t)
	edge := servertest.OpenEdge(t, env.Conn, servertest.EdgeToken("team-a"), servertest.Hello("team-a", "a", servertest.EdgeAddressA))
	cfg := edge.NextConfig(t)
	edge.Ack(t, cfg, false, "nack for the log")
	ctx := adminCtx(t)
	putSecret := "put-secret-password-xyz"
	var responses []proto.Message
	add := func(m proto.Message, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		responses = append(responses, m)
	}
	add(env.Admin.PutUpstream(ctx, &selfhostv1.PutUpstreamRequest{Upstream: &selfhostv1.Upstream{
		Prefix: "private", Url: "https://private.example", Credentials: &selfhostv1.Credentials{Username: "me", Password: putSecret},
	}}))
	add(env.Admin.ListUpstreams(ctx, &selfhostv1.ListUpstreamsRequest{}))
	add(env.Admin.ListEdges(ctx, &selfhostv1.ListEdgesRequest{}))
	add(env.Admin.GetNamespaceConfig(ctx, &selfhostv1.GetNamespaceConfigRequest{Namespace: "team-a"}))
	add(env.Admin.GetNamespaceConfig(ctx, &selfhostv1.GetNamespaceConfigRequest{Namespace: "team-b"}))
	add(env.Admin.Resolve(ctx, &selfhostv1.ResolveRequest{Namespace: "team-a", Image: "127.0.0.1:5001/x"}))
	add(env.Admin.GetCacheStats(ctx, &selfhostv1.GetCacheStatsRequest{}))
	add(env.Admin.InvalidateTag(ctx, &selfhostv1.InvalidateTagRequest{Namespace: "team-a", Tag: &selfhostv1.InvalidateTag{Prefix: "test", Repository: "x", Tag: "1"}}))
	add(env.Admin.DeleteUpstream(ctx, &selfhostv1.DeleteUpstreamRequest{Prefix: "private"}))

	secrets := []string{servertest.UpstreamSecret, servertest.PullTokenA, putSecret, servertest.AdminToken, servertest.EdgeToken("team-a"), servertest.EdgeToken("team-b")}
	for _, m := range responses {
		js, err := protojson.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets {
			if strings.Contains(string(js), s) {
				t.Errorf("%T leaks %q: %s", m, s, js)
			}
		}
	}
	nsCfg := responses[3].(*selfhostv1.GetNamespaceConfigResponse)
	if !nsCfg.GetHasPullToken() || len(nsCfg.GetConfig().GetUpstreams()) == 0 {
		t.Errorf("GetNamespaceConfig(team-a) = %v", nsCfg)
	}
	if responses[4].(*selfhostv1.GetNamespaceConfigResponse).GetHasPullToken() {
		t.Error("team-b has no pull token")
	}
	for _, u := range responses[1].(*selfhostv1.ListUpstreamsResponse).GetUpstreams() {
		if want := u.GetPrefix() == "test" || u.GetPrefix() == "private"; u.GetHasCredentials() != want {
			t.Errorf("%s has_credentials = %v", u.GetPrefix(), u.GetHasCredentials())
		}
	}
	env.Stop(t)
	logs := env.Logs.String()
	if !strings.Contains(logs, "nack for the log") || !strings.Contains(logs, "upstream stored") {
		t.Fatalf("the log misses expected lines:\n%s", logs)
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("log leaks %q", s)
		}
	}
}

// TestHealthNeedsNoTokenReflectionDoes: probes reach health anonymously;
// reflection answers admins and edges only.
func TestHealthNeedsNoTokenReflectionDoes(t *testing.T) {
	t.Parallel()
	env := start(t)
	h, err := healthpb.NewHealthClient(env.Conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v", h, err)
	}
	list := func(ctx context.Context) ([]string, error) {
		stream, err := reflectionpb.NewServerReflectionClient(env.Conn).ServerReflectionInfo(ctx)
		if err != nil {
			return nil, err
		}
		// A refused stream may already be closed when Send runs: Send then
		// says io.EOF, and Recv returns the status (grpc-go's contract).
		if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		resp, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		var names []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		return names, nil
	}
	tests := []struct {
		name  string
		token string
		code  codes.Code
	}{
		{"anonymous", "", codes.Unauthenticated},
		{"unknown token", "not-a-token-0123456789", codes.Unauthenticated},
		{"admin", servertest.AdminToken, codes.OK},
		{"edge", servertest.EdgeToken("team-a"), codes.OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			if tc.token != "" {
				ctx = servertest.WithToken(ctx, tc.token)
			}
			names, err := list(ctx)
			if status.Code(err) != tc.code {
				t.Fatalf("reflection: %v, want %v", err, tc.code)
			}
			if got := strings.Join(names, " "); err == nil && (!strings.Contains(got, "selfhost.v1.AdminService") || !strings.Contains(got, "selfhost.v1.ConfigDiscoveryService")) {
				t.Fatalf("reflection lists %q", got)
			}
		})
	}
}
