package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sync"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
)

// builds caches the commands of this repository built for this test
// binary, one sync.Once per package. It is the harness's only mutable
// global besides the repository root.
var builds struct {
	mu   sync.Mutex
	dir  string
	pkgs map[string]*build
}

type build struct {
	once sync.Once
	path string
	err  error
}

// Main runs the tests of a package that uses the harness and removes the
// binaries the harness built for them. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
	}
	return code
}

// goBinary returns $envVar when set, else builds the main package pkg
// (relative to the repository root, e.g. "./edge/cmd/edge") once per test
// binary.
func goBinary(t testing.TB, envVar, pkg string) string {
	t.Helper()
	testkit.Integration(t) // a test that runs a built binary starts a real process
	if p := os.Getenv(envVar); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s=%s: %v", envVar, p, err)
		}
		return p
	}
	builds.mu.Lock()
	if builds.pkgs == nil {
		builds.pkgs = map[string]*build{}
	}
	b := builds.pkgs[pkg]
	if b == nil {
		b = &build{}
		builds.pkgs[pkg] = b
	}
	builds.mu.Unlock()
	b.once.Do(func() { b.path, b.err = goBuild(pkg) })
	if b.err != nil {
		t.Fatalf("build %s: %v", pkg, b.err)
	}
	return b.path
}

func goBuild(pkg string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("go build %s: %w (test/all.sh puts go on PATH)", pkg, err)
	}
	builds.mu.Lock()
	if builds.dir == "" {
		if builds.dir, err = os.MkdirTemp("", "harness-bin-"); err != nil {
			builds.mu.Unlock()
			return "", err
		}
	}
	dir := builds.dir
	builds.mu.Unlock()
	out := filepath.Join(dir, path.Base(pkg))
	cmd := exec.Command(goBin, "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return out, nil
}
