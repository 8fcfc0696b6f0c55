package configspec

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/durationpb"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

func TestValidateEdgeConfig(t *testing.T) {
	t.Parallel()
	ok := func() *selfhostv1.EdgeConfig {
		return &selfhostv1.EdgeConfig{Version: "v1", Namespace: "team-a", Upstreams: DefaultUpstreams()}
	}
	tests := []struct {
		name   string
		mutate func(c *selfhostv1.EdgeConfig)
		field  string // "" = valid
	}{
		{"defaults", func(c *selfhostv1.EdgeConfig) {}, ""},
		{"custom http", func(c *selfhostv1.EdgeConfig) {
			c.Upstreams = append(c.Upstreams, &selfhostv1.Upstream{Prefix: "test", Url: "http://127.0.0.1:5001"})
		}, ""},
		{"no version", func(c *selfhostv1.EdgeConfig) { c.Version = "" }, "version"},
		{"bad namespace", func(c *selfhostv1.EdgeConfig) { c.Namespace = "Team A" }, "namespace"},
		{"duplicate prefix", func(c *selfhostv1.EdgeConfig) {
			c.Upstreams = append(c.Upstreams, &selfhostv1.Upstream{Prefix: "ghcr", Url: "https://x.io"})
		}, "upstreams[4]"},
		{"alias clash", func(c *selfhostv1.EdgeConfig) {
			c.Upstreams = append(c.Upstreams, &selfhostv1.Upstream{Prefix: "q2", Aliases: []string{"quayio"}, Url: "https://x.io"})
		}, "quayio"},
		{"reserved prefix", func(c *selfhostv1.EdgeConfig) {
			c.Upstreams = append(c.Upstreams, &selfhostv1.Upstream{Prefix: "library", Url: "https://x.io"})
		}, "upstreams[4].prefix"},
		{"upper prefix", func(c *selfhostv1.EdgeConfig) { c.Upstreams[0].Prefix = "DockerHub" }, "upstreams[0].prefix"},
		{"bad scheme", func(c *selfhostv1.EdgeConfig) { c.Upstreams[1].Url = "ftp://ghcr.io" }, "upstreams[1].url"},
		{"no host", func(c *selfhostv1.EdgeConfig) { c.Upstreams[1].Url = "https://" }, "upstreams[1].url"},
		{"path", func(c *selfhostv1.EdgeConfig) { c.Upstreams[1].Url = "https://ghcr.io/v2" }, "upstreams[1].url"},
		{"creds in url", func(c *selfhostv1.EdgeConfig) { c.Upstreams[1].Url = "https://u:secret@ghcr.io" }, "upstreams[1].url"},
		{"percent in host", func(c *selfhostv1.EdgeConfig) { c.Upstreams[1].Url = "http://a%25b.example" }, "upstreams[1].url"},
		{"bad port", func(c *selfhostv1.EdgeConfig) { c.Upstreams[1].Url = "http://a.example:99999" }, "upstreams[1].url"},
		{"ipv6 ok", func(c *selfhostv1.EdgeConfig) { c.Upstreams[1].Url = "http://[::1]:5000" }, ""},
		{"token in query", func(c *selfhostv1.EdgeConfig) { c.Upstreams[1].Url = "https://ghcr.io/?token=secret" }, "upstreams[1].url"},
		{"half credentials", func(c *selfhostv1.EdgeConfig) {
			c.Upstreams[1].Credentials = &selfhostv1.Credentials{Username: "u"}
		}, "upstreams[1].credentials"},
		{"negative ttl", func(c *selfhostv1.EdgeConfig) { c.Upstreams[1].TagTtl = durationpb.New(-1) }, "tag_ttl"},
		{"policy unknown prefix", func(c *selfhostv1.EdgeConfig) {
			c.Policy = &selfhostv1.NamespacePolicy{AllowedPrefixes: []string{"gcr"}}
		}, "policy.allowed_prefixes[0]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := ok()
			tc.mutate(c)
			err := ValidateEdgeConfig(c)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("valid config rejected: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("err = %v, want ErrInvalid naming %q", err, tc.field)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("error leaks a secret: %v", err)
			}
		})
	}
}
