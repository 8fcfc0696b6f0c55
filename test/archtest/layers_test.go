package archtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/k8s-selfhost-repo/k8s-selfhost-repo"

// group is one component's internal packages in layers, top first. A
// package imports only packages of its group from layers below its own (not
// its own layer: two packages that need each other belong in different
// layers). Test helpers — a package one of whose path elements ends in
// "test" or is "testkit" — are not listed: they may import any layer, and
// only tests and other helpers may import them.
type group struct {
	root   string     // e.g. "controlplane/internal"
	doc    string     // where the order is written for people
	layers [][]string // package paths relative to root, top layer first
}

// layerTables is the documented order. Keep it and the doc it names in step.
func layerTables() []group {
	return []group{
		{
			root: "controlplane/internal",
			doc:  "controlplane/README.md#layout",
			layers: [][]string{
				{"grpcserver", "incluster", "uninstall"},
				{"admin", "metrics"},
				{"push", "broker", "calllimit", "configstore", "clash", "clusterview"},
				{"snapshot", "controller", "config/configfile", "proof"},
				{"config", "auth", "connlimit", "leader", "probes", "config/configmapstate", "nodeaccess"},
			},
		},
		{
			root: "edge/internal",
			doc:  "docs/architecture.md#8-package-dependencies",
			layers: [][]string{
				{"server"},
				{"registry", "configclient", "brokerstore"},
				{"cache"},
				{"route", "metrics"},
			},
		},
		{
			root: "internal",
			doc:  "docs/architecture.md#8-package-dependencies",
			layers: [][]string{
				{"blob/fs", "blob/s3", "upstream", "proxydial", "chartpush", "imagebuild"},
				{"blob"},
				{"oci", "clashnode", "flagenv", "configspec", "kubecontract", "kubeclient"},
			},
		},
		{
			root: "forwarder/internal",
			doc:  "docs/architecture.md#8-package-dependencies",
			layers: [][]string{
				{"agent"},
				{"edgesvc"},
				{"relay"},
			},
		},
	}
}

// pkg is one package as go list reports it (non-test imports only: a test
// may import what it needs to prove the package).
type pkg struct {
	ImportPath string
	Imports    []string
}

func TestLayers(t *testing.T) {
	pkgs := listPackages(t)
	for _, g := range layerTables() {
		t.Run(g.root, func(t *testing.T) {
			for _, v := range g.violations(pkgs) {
				t.Error(v)
			}
		})
	}
}

// isHelper reports whether rel (a path under a group's root) is a test
// helper package.
func isHelper(rel string) bool {
	for _, e := range strings.Split(rel, "/") {
		if strings.HasSuffix(e, "test") || e == "testkit" {
			return true
		}
	}
	return false
}

// violations lists every import of pkgs that breaks g's order, every
// package under g.root that no layer lists, and every listed package that
// does not exist.
func (g group) violations(pkgs []pkg) []string {
	prefix := module + "/" + g.root + "/"
	layerOf := map[string]int{}
	for i, l := range g.layers {
		for _, p := range l {
			layerOf[p] = i
		}
	}
	var out []string
	seen := map[string]bool{}
	for _, p := range pkgs {
		rel, ok := strings.CutPrefix(p.ImportPath, prefix)
		if !ok {
			continue
		}
		seen[rel] = true
		helper := isHelper(rel)
		layer, listed := layerOf[rel]
		if !helper && !listed {
			out = append(out, fmt.Sprintf("%s/%s is in no layer: add it to test/archtest's table and to %s, in the layer its imports allow", g.root, rel, g.doc))
			continue
		}
		for _, imp := range p.Imports {
			impRel, ok := strings.CutPrefix(imp, prefix)
			if !ok || impRel == rel {
				continue
			}
			if isHelper(impRel) {
				if !helper {
					out = append(out, fmt.Sprintf("%s/%s imports the test helper %s/%s: only tests and other helpers may", g.root, rel, g.root, impRel))
				}
				continue
			}
			impLayer, ok := layerOf[impRel]
			if helper || !ok { // an unlisted import is reported as itself
				continue
			}
			if impLayer <= layer {
				out = append(out, fmt.Sprintf("%s/%s (layer %d) imports %s/%s (layer %d): a package imports only from layers below its own (%s); move one of them or the code",
					g.root, rel, layer+1, g.root, impRel, impLayer+1, g.doc))
			}
		}
	}
	for rel := range layerOf {
		if !seen[rel] {
			out = append(out, fmt.Sprintf("%s/%s is listed in test/archtest's table but is not a package (any more): update the table and %s", g.root, rel, g.doc))
		}
	}
	slices.Sort(out)
	return out
}

// listPackages runs go list over the whole module.
func listPackages(t *testing.T) []pkg {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root: %v", err)
	}
	cmd := exec.CommandContext(t.Context(), "go", "list", "-e", "-json=ImportPath,Imports", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list ./...: %v\n%s", err, stderr.String())
	}
	var pkgs []pkg
	for dec := json.NewDecoder(bytes.NewReader(out)); ; {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list ./... found no packages")
	}
	return pkgs
}

// TestViolations proves the checker on a small made-up component, so that
// TestLayers passing means the tree is in order, not that the checker
// looks at nothing.
func TestViolations(t *testing.T) {
	g := group{root: "c/internal", doc: "c/README.md", layers: [][]string{{"top"}, {"mid", "side"}, {"low"}}}
	p := func(rel string, imports ...string) pkg {
		full := make([]string, len(imports))
		for i, imp := range imports {
			full[i] = module + "/c/internal/" + imp
		}
		return pkg{ImportPath: module + "/c/internal/" + rel, Imports: append(full, "fmt", module+"/internal/oci")}
	}
	all := func(extra ...pkg) []pkg {
		return append([]pkg{p("top", "mid", "low"), p("mid", "low"), p("side"), p("low"), p("low/lowtest", "top")}, extra...)
	}
	tests := []struct {
		name string
		pkgs []pkg
		want []string // substrings, one per violation
	}{
		{"in order", all(), nil},
		{"import points up", append(all()[1:], p("top"), p("low", "top")), []string{"c/internal/low (layer 3) imports c/internal/top (layer 1)"}},
		{"import within a layer", append(all()[:2], p("side", "mid"), p("low"), p("low/lowtest")), []string{"c/internal/side (layer 2) imports c/internal/mid (layer 2)"}},
		{"production code imports a helper", append(all()[:3], p("low", "low/lowtest"), p("low/lowtest")), []string{"c/internal/low imports the test helper c/internal/low/lowtest"}},
		{"package in no layer", all(p("new", "low")), []string{"c/internal/new is in no layer"}},
		{"stale entry", append(all()[:2], p("low"), p("low/lowtest")), []string{"c/internal/side is listed in test/archtest's table but is not a package"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := g.violations(tc.pkgs)
			if len(got) != len(tc.want) {
				t.Fatalf("violations = %q, want %d matching %q", got, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("violation %d = %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}
