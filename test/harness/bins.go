package harness

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
)

// Install hints shown when a binary is missing. test/all.sh does all of
// this; the hints are for someone running `go test` by hand.
const (
	hintApt   = "run test/all.sh once, or: apt-get install -y --no-install-recommends docker-registry skopeo containerd runc"
	hintTools = "run test/all.sh once, or: (cd tools && go build -o ../bin/tools/ tool)"
)

// Binary returns the path of an executable: $envVar when set, else the
// first of PATH and <repo>/bin/tools. It fails the test with hint when the
// binary cannot be found: the end-to-end suite never skips for a missing
// dependency. Every server and client the harness runs is found here, so
// a test that reaches it is an integration test: under go test -short
// it is skipped (testkit.Integration), never for a missing binary.
func Binary(t testing.TB, name, envVar, hint string) string {
	t.Helper()
	testkit.Integration(t)
	path, err := findBinary(name, envVar)
	if err != nil {
		t.Fatalf("%v; %s", err, hint)
	}
	return path
}

func findBinary(name, envVar string) (string, error) {
	if envVar != "" {
		if p := os.Getenv(envVar); p != "" {
			if _, err := os.Stat(p); err != nil {
				return "", fmt.Errorf("%s=%s: %w", envVar, p, err)
			}
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if root, err := RepoRoot(); err == nil {
		p := filepath.Join(root, "bin", "tools", name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("binary %q not found (env %s, PATH, bin/tools)", name, envVar)
}

// The binaries the harness runs, by name, env override and hint.
func dockerRegistryBin(t testing.TB) string {
	return Binary(t, "docker-registry", "DOCKER_REGISTRY", hintApt)
}
func skopeoBin(t testing.TB) string     { return Binary(t, "skopeo", "SKOPEO", hintApt) }
func containerdBin(t testing.TB) string { return Binary(t, "containerd", "CONTAINERD", hintApt) }
func ctrBin(t testing.TB) string        { return Binary(t, "ctr", "CTR", hintApt) }
func craneBin(t testing.TB) string      { return Binary(t, "crane", "CRANE", hintTools) }
func crictlBin(t testing.TB) string     { return Binary(t, "crictl", "CRICTL", hintTools) }

// VersityGWBin is the versitygw S3 server binary (env VERSITYGW).
func VersityGWBin(t testing.TB) string { return Binary(t, "versitygw", "VERSITYGW", hintTools) }

var repoRoot struct {
	once sync.Once
	dir  string
	err  error
}

// modulePath identifies the repository root's go.mod.
const modulePath = "github.com/k8s-selfhost-repo/k8s-selfhost-repo"

// RepoRoot returns the directory of the repository's root go.mod, found by
// walking up from the working directory (a test runs in its package's
// directory).
func RepoRoot() (string, error) {
	repoRoot.once.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			repoRoot.err = err
			return
		}
		for {
			b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
			if err == nil && bytes.HasPrefix(bytes.TrimSpace(b), []byte("module "+modulePath+"\n")) {
				repoRoot.dir = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				repoRoot.err = fmt.Errorf("no go.mod of module %s above the working directory", modulePath)
				return
			}
			dir = parent
		}
	})
	return repoRoot.dir, repoRoot.err
}

// run executes a client command and returns its stdout; a failure carries
// the command line and its stderr.
func run(bin string, args ...string) ([]byte, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = scrubbedEnv(nil)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %v: %w\nstderr: %s", filepath.Base(bin), args, err, stderr.String())
	}
	return stdout.Bytes(), nil
}
