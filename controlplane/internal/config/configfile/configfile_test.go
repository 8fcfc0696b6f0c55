package configfile

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/controlplane/internal/config"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/configspec"
	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
)

const (
	adminTok = "admin-token-0123456789"
	edgeTokA = "edge-token-a-0123456789"
	edgeTokB = "edge-token-b-0123456789"
	secret   = "very-secret-password"
)

const validConfig = `
adminTokens: ["` + adminTok + `"]
upstreams:
  - prefix: test
    url: http://127.0.0.1:5001
    aliases: [t]
    hosts: [test.local]
    credentials: {username: u, password: ` + secret + `}
    tagTTL: 5m
  - {prefix: ghcr, url: "https://ghcr.io"}
namespaces:
  team-a:
    edgeToken: ` + edgeTokA + `
    pullToken: pull-token-a
    allowedPrefixes: [test]
    edgeAddress: "127.0.0.1:5000"
    maxConcurrentFills: 4
    maxUpstreamRequestsPerSecond: 20
    upstreamBurst: 40
  team-b:
    edgeToken: ` + edgeTokB + `
`

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "controlplane.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadValid(t *testing.T) {
	t.Parallel()
	st, err := New(writeConfig(t, validConfig), "", discard()).Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.AdminTokens) != 1 || st.AdminTokens[0].Reveal() != adminTok {
		t.Errorf("admin tokens %v", st.AdminTokens)
	}
	a := st.Namespaces["team-a"]
	if a.EdgeToken.Reveal() != edgeTokA || a.PullToken.Reveal() != "pull-token-a" || a.EdgeAddress != "127.0.0.1:5000" || a.MaxConcurrentFills != 4 ||
		a.MaxUpstreamRPS != 20 || a.UpstreamBurst != 40 {
		t.Errorf("team-a = %+v", a)
	}
	u := st.Upstreams[0]
	if u.GetPrefix() != "test" || u.GetCredentials().GetPassword() != secret || u.GetTagTtl().AsDuration() != 5*time.Minute || u.GetHosts()[0] != "test.local" {
		t.Errorf("upstream = %v", u)
	}
}

func TestLoadDefaultsUpstreams(t *testing.T) {
	t.Parallel()
	st, err := New(writeConfig(t, "adminTokens: [\""+adminTok+"\"]\n"), "", discard()).Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Upstreams) != len(configspec.DefaultUpstreams()) || st.Upstreams[0].GetPrefix() != "dockerhub" {
		t.Fatalf("upstreams %v, want the defaults", st.Upstreams)
	}
}

func TestLoadTokenFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	must := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	must("admin.tokens", "# operators\n"+adminTok+"\n\nsecond-admin-token-0123\n")
	must("edge-a.token", edgeTokA+"\n")
	cfg := "adminTokenFile: admin.tokens\nnamespaces:\n  team-a:\n    edgeTokenFile: edge-a.token\n"
	must("controlplane.yaml", cfg)
	st, err := New(filepath.Join(dir, "controlplane.yaml"), "", discard()).Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.AdminTokens) != 2 || st.Namespaces["team-a"].EdgeToken.Reveal() != edgeTokA {
		t.Fatalf("tokens: %d admin, edge %q", len(st.AdminTokens), st.Namespaces["team-a"].EdgeToken.Reveal())
	}
}

func TestLoadRefusesBadValues(t *testing.T) {
	t.Parallel()
	ns := func(body string) string {
		return "adminTokens: [\"" + adminTok + "\"]\nnamespaces:\n  team-a:\n" + body
	}
	tests := []struct {
		name   string
		config string
		want   []string // every one must be named
	}{
		{"unknown top-level field", "adminTokens: [\"" + adminTok + "\"]\nupstream: []\n", []string{"upstream: unknown field"}},
		{"unknown namespace fields", ns("    edgeTokn: x\n    pulltoken: y\n"), []string{"namespaces.team-a.edgeTokn: unknown field", `namespaces.team-a.pulltoken: unknown field (did you mean "pullToken"?)`}},
		{"field case matters", "adminTokens: [\"" + adminTok + "\"]\nupstreams:\n  - {prefix: a, url: 'https://a.io', tagTtl: 5m}\n", []string{`upstreams[0].tagTtl: unknown field (did you mean "tagTTL"?)`}},
		{"wrong type, value hidden", ns("    edgeToken: [12345678901234567890]\n"), []string{"edgeToken", "want string"}},
		{"no admin token", "namespaces: {}\n", []string{"adminTokens: at least one"}},
		{"short token", ns("    edgeToken: short\n"), []string{"namespaces.team-a.edgeToken: a token needs at least 16"}},
		{"token charset", ns("    edgeToken: \"has spaces in the token\"\n"), []string{"namespaces.team-a.edgeToken: a token may only contain"}},
		{"missing edge token", ns("    pullToken: x\n"), []string{"namespaces.team-a.edgeToken: required"}},
		{"token and file", ns("    edgeToken: " + edgeTokA + "\n    edgeTokenFile: x\n"), []string{"namespaces.team-a.edgeToken: set the value or the file"}},
		{"duplicate tokens", "adminTokens: [\"" + edgeTokA + "\"]\nnamespaces:\n  team-a: {edgeToken: " + edgeTokA + "}\n  team-b: {edgeToken: " + edgeTokA + "}\n",
			[]string{"namespaces.team-a.edgeToken: same token as adminTokens[0]", "namespaces.team-b.edgeToken: same token as adminTokens[0]"}},
		{"bad namespace name", "adminTokens: [\"" + adminTok + "\"]\nnamespaces:\n  Team_A: {edgeToken: " + edgeTokA + "}\n", []string{"namespaces.Team_A: not a Kubernetes namespace name"}},
		{"bad edge address", ns("    edgeToken: " + edgeTokA + "\n    edgeAddress: http://x:1/\n"), []string{"namespaces.team-a.edgeAddress"}},
		{"bad allowed prefix", ns("    edgeToken: " + edgeTokA + "\n    allowedPrefixes: [Bad]\n"), []string{"namespaces.team-a.allowedPrefixes[0]"}},
		{"unknown allowed prefix", ns("    edgeToken: " + edgeTokA + "\n    allowedPrefixes: [gcr]\n"), []string{`namespaces.team-a.allowedPrefixes[0]: "gcr" is not an upstream prefix`}},
		{"bad upstream url", "adminTokens: [\"" + adminTok + "\"]\nupstreams:\n  - {prefix: a, url: 'ftp://a.io'}\n", []string{"upstreams[0].url"}},
		{"reserved prefix", "adminTokens: [\"" + adminTok + "\"]\nupstreams:\n  - {prefix: library, url: 'https://a.io'}\n", []string{"upstreams[0].prefix"}},
		{"duplicate prefix", "adminTokens: [\"" + adminTok + "\"]\nupstreams:\n  - {prefix: a, url: 'https://a.io'}\n  - {prefix: a, url: 'https://b.io'}\n", []string{"upstreams[1]"}},
		{"bad tagTTL", "adminTokens: [\"" + adminTok + "\"]\nupstreams:\n  - {prefix: a, url: 'https://a.io', tagTTL: soon}\n", []string{"upstreams[0].tagTTL"}},
		{"negative fills", ns("    edgeToken: " + edgeTokA + "\n    maxConcurrentFills: -1\n"), []string{"maxConcurrentFills", "want uint32"}},
		{"duplicate key", "adminTokens: [\"" + adminTok + "\"]\nadminTokens: []\n", []string{`"adminTokens" already set`}},
		{"missing token file", ns("    edgeTokenFile: /nonexistent/token\n"), []string{"namespaces.team-a.edgeToken", "no such file"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(writeConfig(t, tc.config), "", discard()).Load(t.Context())
			if !errors.Is(err, config.ErrInvalid) && !strings.Contains(tc.name, "missing token file") {
				t.Fatalf("err = %v, want config.ErrInvalid", err)
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not name %q:\n%v", w, err)
				}
			}
			for _, s := range []string{edgeTokA, adminTok, "12345678901234567890", "has spaces in the token"} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error leaks %q:\n%v", s, err)
				}
			}
		})
	}
}

func TestSaveThenLoad(t *testing.T) {
	t.Parallel()
	cfgPath := writeConfig(t, validConfig)
	stateDir := filepath.Join(t.TempDir(), "state") // created on first save
	src := New(cfgPath, stateDir, discard())
	st, err := src.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	st.Upstreams = append(st.Upstreams, &selfhostv1.Upstream{Prefix: "quay", Url: "https://quay.io", Aliases: []string{"quayio"}})
	if err := src.Save(t.Context(), st); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(src.StatePath())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v", fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(stateDir); len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
	again, err := src.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Upstreams) != 3 || again.Upstreams[2].GetPrefix() != "quay" || again.Upstreams[0].GetCredentials().GetPassword() != secret ||
		again.Upstreams[0].GetTagTtl().AsDuration() != 5*time.Minute {
		t.Fatalf("after reload: %v", again.Upstreams)
	}
}

func TestLoadRefusesBadStateFile(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"not json":       "{",
		"unknown field":  `{"format":1,"upstreams":[],"extra":1}`,
		"future format":  `{"format":2,"upstreams":[]}`,
		"bad upstream":   `{"format":1,"upstreams":[{"prefix":"x","url":"ftp://x"}]}`,
		"policy dangles": `{"format":1,"upstreams":[{"prefix":"ghcr","url":"https://ghcr.io"}]}`, // team-a allows "test"
	}
	for name, content := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfgPath := writeConfig(t, validConfig)
			if err := os.WriteFile(filepath.Join(filepath.Dir(cfgPath), StateFileName), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := New(cfgPath, "", discard()).Load(t.Context()); err == nil {
				t.Fatal("a bad state file was accepted (or silently ignored)")
			}
		})
	}
}
