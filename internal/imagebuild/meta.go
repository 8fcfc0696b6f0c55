package imagebuild

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// modulePath identifies the repository's root go.mod.
const modulePath = "github.com/k8s-selfhost-repo/k8s-selfhost-repo"

// chartFile is the chart whose appVersion is the default image version:
// the chart's image tags default to it, so images built with the default
// are the ones `helm install` asks for.
const chartFile = "charts/k8s-selfhost-repo/Chart.yaml"

// FindRepoRoot walks up from dir to the directory whose go.mod declares
// this repository's module.
func FindRepoRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(bytes.TrimSpace(b), []byte("module "+modulePath+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("find repository root: no go.mod of module %s above %s", modulePath, dir)
		}
		dir = parent
	}
}

// chartMeta is what the build takes from Chart.yaml.
type chartMeta struct {
	AppVersion string `yaml:"appVersion"`
	Home       string `yaml:"home"`
}

// readChart reads the chart's appVersion and home.
func readChart(repoRoot string) (chartMeta, error) {
	var m chartMeta
	b, err := os.ReadFile(filepath.Join(repoRoot, chartFile))
	if err != nil {
		return m, fmt.Errorf("read chart: %w", err)
	}
	if err := yaml.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("parse %s: %w", chartFile, err)
	}
	if m.AppVersion == "" {
		return m, fmt.Errorf("parse %s: no appVersion", chartFile)
	}
	return m, nil
}

// ParseSourceDateEpoch parses a SOURCE_DATE_EPOCH value (decimal seconds
// since 1970, https://reproducible-builds.org/specs/source-date-epoch/).
func ParseSourceDateEpoch(s string) (time.Time, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, fmt.Errorf("parse SOURCE_DATE_EPOCH %q: not a non-negative integer", s)
	}
	return time.Unix(n, 0).UTC(), nil
}

// gitInfo is the commit the images are built from.
type gitInfo struct {
	Revision string
	Time     time.Time
	// Dirty is true when the working tree differs from the commit, so the
	// images are not reproducible from Revision alone.
	Dirty bool
}

// readGit asks git for HEAD's commit, its committer time and whether the
// working tree has uncommitted changes.
func readGit(ctx context.Context, repoRoot string) (gitInfo, error) {
	var g gitInfo
	out, err := git(ctx, repoRoot, "log", "-1", "--format=%H %ct", "HEAD")
	if err != nil {
		return g, err
	}
	rev, ts, ok := strings.Cut(strings.TrimSpace(out), " ")
	if !ok {
		return g, fmt.Errorf("git log: unexpected output %q", out)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return g, fmt.Errorf("git log: commit time %q: %w", ts, err)
	}
	g.Revision, g.Time = rev, time.Unix(sec, 0).UTC()
	status, err := git(ctx, repoRoot, "status", "--porcelain", "--untracked-files=no")
	if err != nil {
		return g, err
	}
	g.Dirty = strings.TrimSpace(status) != ""
	return g, nil
}

func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}
