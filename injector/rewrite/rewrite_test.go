package rewrite

import (
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

const edge = "127.0.0.1:30500"

// defaultUpstreams mirror configspec.DefaultUpstreams plus two custom ones;
// this package must not import the control plane's config.
func testRules() Rules {
	return Rules{
		EdgeAddress: edge,
		Upstreams: []Upstream{
			{Prefix: "dockerhub", URL: "https://registry-1.docker.io", Hosts: []string{"docker.io", "index.docker.io"}},
			{Prefix: "ghcr", URL: "https://ghcr.io"},
			{Prefix: "quay", URL: "https://quay.io"},
			{Prefix: "k8s", URL: "https://registry.k8s.io"},
			{Prefix: "corp", URL: "https://registry.corp.example:5443"},
			{Prefix: "test", URL: "http://127.0.0.1:5001"},
		},
	}
}

const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

var goldenCases = []struct{ name, image string }{
	{"short name", "nginx"},
	{"short name with tag", "nginx:1.25"},
	{"docker.io", "docker.io/nginx"},
	{"index.docker.io library", "index.docker.io/library/nginx"},
	{"registry-1.docker.io library", "registry-1.docker.io/library/nginx"},
	{"registry-1.docker.io one segment", "registry-1.docker.io/nginx"},
	{"user repository", "user/app"},
	{"ghcr with tag", "ghcr.io/o/r:tag"},
	{"quay by digest", "quay.io/x/y@" + digest},
	{"tag and digest", "nginx:1.25@" + digest},
	{"registry.k8s.io", "registry.k8s.io/pause:3.9"},
	{"custom host with port", "registry.corp.example:5443/team/app:v1"},
	{"upper-case host", "GHCR.IO/o/r:tag"},
	{"upper-case repository", "UPPER/Case"},
	{"double tag", ":tag:tag"},
	{"empty", ""},
	{"300-character name", "ghcr.io/" + strings.Repeat("a", 300)},
	{"rewrite would exceed 255", "ghcr.io/" + strings.Repeat("b", 251)},
	{"short digest", "nginx@sha256:short"},
	{"scheme", "https://ghcr.io/o/r"},
	{"double slash", "ghcr.io/a//b"},
	{"unknown registry", "example.com/x/y:1"},
	{"already rewritten", edge + "/dockerhub/library/nginx:latest"},
	{"other edge", "127.0.0.1:30501/dockerhub/library/nginx:latest"},
	{"localhost registry", "localhost:5000/x"},
	{"127.0.0.1 registry", "127.0.0.1:5000/x"},
	{"ipv6 loopback registry", "[::1]:5000/x"},
}

func TestRewriteGolden(t *testing.T) {
	t.Parallel()
	rw, err := New(testRules())
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, tc := range goldenCases {
		res := rw.Rewrite(tc.image)
		fmt.Fprintf(&b, "# %s\nimage:        %q\nrewritten:    %q\nnormalized:   %q\nprefix:       %q\nupstream_url: %q\nreason:       %q\ndetail:       %q\n\n",
			tc.name, tc.image, res.Rewritten, res.Normalized, res.Prefix, res.UpstreamURL, res.Reason, res.Detail)
	}
	path := filepath.Join("testdata", "rewrite.golden")
	testkit.Golden(t, path, b.String(), *update)
}

func TestRewriteRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		rules  func(r *Rules)
		image  string
		want   string
		reason Reason
	}{
		{"allowed prefix", func(r *Rules) { r.AllowedPrefixes = []string{"ghcr"} }, "ghcr.io/o/r:1", edge + "/ghcr/o/r:1", ReasonNone},
		{"prefix not allowed", func(r *Rules) { r.AllowedPrefixes = []string{"ghcr"} }, "nginx", "nginx", ReasonNotAllowed},
		{"no edge address", func(r *Rules) { r.EdgeAddress = "" }, "nginx", "nginx", ReasonNoEdge},
		{"docker.io only in hosts", func(r *Rules) {
			r.Upstreams = []Upstream{{Prefix: "hub", URL: "https://mirror.example", Hosts: []string{"docker.io"}}}
		}, "nginx:1", edge + "/hub/library/nginx:1", ReasonNone},
		{"explicit default port", func(r *Rules) {
			r.Upstreams = []Upstream{{Prefix: "g", URL: "https://ghcr.io:443"}}
		}, "ghcr.io/o/r", edge + "/g/o/r:latest", ReasonNone},
		{"first upstream wins a shared host", func(r *Rules) {
			r.Upstreams = []Upstream{{Prefix: "a", URL: "https://ghcr.io"}, {Prefix: "b", URL: "https://ghcr.io"}}
		}, "ghcr.io/o/r:1", edge + "/a/o/r:1", ReasonNone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rules := testRules()
			tc.rules(&rules)
			rw, err := New(rules)
			if err != nil {
				t.Fatal(err)
			}
			res := rw.Rewrite(tc.image)
			if res.Rewritten != tc.want || res.Reason != tc.reason {
				t.Fatalf("Rewrite(%q) = %q (%s: %s), want %q (%s)", tc.image, res.Rewritten, res.Reason, res.Detail, tc.want, tc.reason)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		rules Rules
		field string
	}{
		{"edge with scheme", Rules{EdgeAddress: "http://127.0.0.1:5000"}, "edge address"},
		{"edge with path", Rules{EdgeAddress: "127.0.0.1:5000/x"}, "edge address"},
		{"edge with space", Rules{EdgeAddress: "a b"}, "edge address"},
		{"upstream without scheme", Rules{Upstreams: []Upstream{{Prefix: "x", URL: "ghcr.io"}}}, "upstreams[0].url"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(tc.rules)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("New = %v, want ErrInvalid naming %q", err, tc.field)
			}
		})
	}
}
