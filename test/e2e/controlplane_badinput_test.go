package e2e

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// TestControlPlaneBadInput sends every kind of bad admin input with grpcurl:
// each gets its gRPC code and a message naming the field, and nothing is
// half-applied — the upstream list, every namespace version and the state
// file are unchanged, and a real edge keeps serving on the configuration it
// had.
func TestControlPlaneBadInput(t *testing.T) {
	t.Parallel()
	e := newCPEnv(t)
	edge := e.startEdge(t, "team-b", "team-b")
	version := e.waitSynced(t, edge, "team-b")
	versionA := e.nsVersion(t, "team-a")
	before := e.mustAdmin(t, "ListUpstreams", "{}", nil).Stdout

	for _, c := range []struct {
		name, method, body string
		code               string
		parts              []string // in the message: the field, and why
	}{
		{"invalid upstream URL scheme", "PutUpstream", `{"upstream":{"prefix":"bad","url":"ftp://registry.example"}}`,
			"InvalidArgument", []string{"upstream.url", "scheme"}},
		{"upstream URL with a path", "PutUpstream", `{"upstream":{"prefix":"bad","url":"https://registry.example/v2"}}`,
			"InvalidArgument", []string{"upstream.url", "path"}},
		{"upstream URL without a host", "PutUpstream", `{"upstream":{"prefix":"bad","url":"http://"}}`,
			"InvalidArgument", []string{"upstream.url"}},
		{"upstream URL with credentials", "PutUpstream", `{"upstream":{"prefix":"bad","url":"https://u:p@registry.example"}}`,
			"InvalidArgument", []string{"upstream.url", "credentials"}},
		{"prefix that is another upstream's alias", "PutUpstream", `{"upstream":{"prefix":"quayio","url":"https://registry.example"}}`,
			"InvalidArgument", []string{"upstream.prefix", "quay"}},
		{"alias that is another upstream's prefix", "PutUpstream", `{"upstream":{"prefix":"new","aliases":["test"],"url":"https://registry.example"}}`,
			"InvalidArgument", []string{"upstream.aliases[0]", "test"}},
		{"host that selects another upstream", "PutUpstream", `{"upstream":{"prefix":"new","url":"https://registry.example","hosts":["docker.io"]}}`,
			"InvalidArgument", []string{"upstream.hosts[0]", "dockerhub"}},
		{"reserved prefix library", "PutUpstream", `{"upstream":{"prefix":"library","url":"https://registry.example"}}`,
			"InvalidArgument", []string{"upstream.prefix", "reserved"}},
		{"reserved prefix v2", "PutUpstream", `{"upstream":{"prefix":"v2","url":"https://registry.example"}}`,
			"InvalidArgument", []string{"upstream.prefix", "reserved"}},
		{"upper-case prefix", "PutUpstream", `{"upstream":{"prefix":"Bad","url":"https://registry.example"}}`,
			"InvalidArgument", []string{"upstream.prefix"}},
		{"half credentials", "PutUpstream", `{"upstream":{"prefix":"new","url":"https://registry.example","credentials":{"username":"u"}}}`,
			"InvalidArgument", []string{"upstream.credentials"}},
		{"negative tag TTL", "PutUpstream", `{"upstream":{"prefix":"new","url":"https://registry.example","tagTtl":"-1s"}}`,
			"InvalidArgument", []string{"upstream.tag_ttl"}},
		{"no upstream", "PutUpstream", `{}`, "InvalidArgument", []string{"upstream"}},
		{"delete unknown upstream", "DeleteUpstream", `{"prefix":"nope"}`, "NotFound", []string{"nope"}},
		{"delete by alias", "DeleteUpstream", `{"prefix":"quayio"}`, "NotFound", []string{"quayio"}},
		{"unknown namespace: GetNamespaceConfig", "GetNamespaceConfig", `{"namespace":"team-z"}`, "NotFound", []string{"team-z"}},
		{"empty namespace: GetNamespaceConfig", "GetNamespaceConfig", `{}`, "InvalidArgument", []string{"namespace"}},
		{"unknown namespace: ListEdges", "ListEdges", `{"namespace":"team-z"}`, "NotFound", []string{"team-z"}},
		{"unknown namespace: Resolve", "Resolve", `{"namespace":"team-z","image":"nginx"}`, "NotFound", []string{"team-z"}},
		{"unknown namespace: GetCacheStats", "GetCacheStats", `{"namespace":"team-z"}`, "NotFound", []string{"team-z"}},
		{"unknown namespace: InvalidateTag", "InvalidateTag", `{"namespace":"team-z","tag":{"prefix":"test","repository":"cp/app","tag":"v1"}}`,
			"NotFound", []string{"team-z"}},
		{"empty image: Resolve", "Resolve", `{"namespace":"team-a"}`, "InvalidArgument", []string{"image"}},
		{"unknown prefix: InvalidateTag", "InvalidateTag", `{"namespace":"team-a","tag":{"prefix":"nope","repository":"cp/app","tag":"v1"}}`,
			"InvalidArgument", []string{"tag.prefix"}},
		{"bad repository: InvalidateTag", "InvalidateTag", `{"namespace":"team-a","tag":{"prefix":"test","repository":"Not/Valid","tag":"v1"}}`,
			"InvalidArgument", []string{"tag.repository"}},
		{"bad tag: InvalidateTag", "InvalidateTag", `{"namespace":"team-a","tag":{"prefix":"test","repository":"cp/app","tag":"-bad"}}`,
			"InvalidArgument", []string{"tag.tag"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := e.admin(t, c.method, c.body)
			t.Logf("%s → %s: %s", c.method, r.Code, r.Message)
			wantGRPCStatus(t, r, c.code, c.parts...)
			e.noSecrets(t, r.Cmd, r.Output())
		})
	}

	t.Run("oversized messages", func(t *testing.T) {
		// Over the 1 MiB request limit: refused before any handler runs.
		big := strings.Repeat("a", 2<<20)
		for method, body := range map[string]string{
			"Resolve":     fmt.Sprintf(`{"namespace":"team-a","image":"%s"}`, big),
			"PutUpstream": fmt.Sprintf(`{"upstream":{"prefix":"big","url":"https://%s.example"}}`, big),
		} {
			r := harness.Grpcurl(t, []byte(body), "-plaintext", "-H", "authorization: Bearer "+e.adminToken,
				"-d", "@", e.cp.Addr, "selfhost.v1.AdminService/"+method)
			t.Logf("%s of 2 MiB → %s: %s", method, r.Code, r.Message)
			wantGRPCStatus(t, r, "ResourceExhausted")
		}
	})

	t.Run("malformed and wrong tokens", func(t *testing.T) {
		for _, c := range []struct {
			name, header string // header "" sends no authorization metadata
			code, part   string
		}{
			{"no token", "", "Unauthenticated", "missing bearer token"},
			{"not Bearer", "authorization: Token abcdefghijklmnopqrstuvwxyz", "Unauthenticated", "malformed"},
			{"empty Bearer", "authorization: Bearer ", "Unauthenticated", "malformed"},
			{"space inside the token", "authorization: Bearer abc defghijklmnopqrstuv", "Unauthenticated", "malformed"},
			{"bad character", "authorization: Bearer abc!defghijklmnopqrstuv", "Unauthenticated", "malformed"},
			{"unknown token", "authorization: Bearer not-a-token-" + cpSecret(t), "Unauthenticated", "unknown token"},
			{"edge token on the admin API", "authorization: Bearer " + e.edgeTokens["team-a"], "PermissionDenied", "edge token"},
		} {
			t.Run(c.name, func(t *testing.T) {
				// Reflection gets the admin token, so the refusal is the
				// call's own.
				args := []string{"-plaintext", "-reflect-header", "authorization: Bearer " + e.adminToken}
				if c.header != "" {
					args = append(args, "-rpc-header", c.header)
				}
				// A change, so that a refused caller provably changed nothing.
				r := harness.Grpcurl(t, nil, append(args, "-d", `{"upstream":{"prefix":"sneaky","url":"https://registry.example"}}`,
					e.cp.Addr, "selfhost.v1.AdminService/PutUpstream")...)
				t.Logf("%s → %s: %s", c.name, r.Code, r.Message)
				wantGRPCStatus(t, r, c.code, c.part)
				e.noSecrets(t, r.Cmd, r.Output())
			})
		}
	})

	t.Run("nothing changed", func(t *testing.T) {
		if after := e.mustAdmin(t, "ListUpstreams", "{}", nil).Stdout; after != before {
			t.Errorf("ListUpstreams changed after refused calls:\nbefore %s\nafter %s", before, after)
		}
		if v := e.nsVersion(t, "team-a"); v != versionA {
			t.Errorf("team-a version %s, want the unchanged %s", v, versionA)
		}
		if v := e.nsVersion(t, "team-b"); v != version {
			t.Errorf("team-b version %s, want the unchanged %s", v, version)
		}
		if _, err := os.Stat(e.cp.StatePath()); !os.IsNotExist(err) {
			t.Errorf("refused changes wrote the state file %s (stat: %v)", e.cp.StatePath(), err)
		}
	})

	t.Run("edge keeps serving on its configuration", func(t *testing.T) {
		r := edge.Readiness(t)
		if r.ControlPlane != "connected" || r.ConfigVersion != version || r.LastNACK != "" {
			t.Errorf("edge /readyz %+v, want connected on %s without NACK", r, version)
		}
		got, err := harness.CraneEnv(t, e.craneEnv(t, edge, "team-b"), "manifest", e.img.Ref(edge.Addr, prefix))
		if err != nil || !bytes.Equal(got, e.img.Manifest) {
			t.Errorf("pull through the edge after refused changes: %v", err)
		}
	})
}
