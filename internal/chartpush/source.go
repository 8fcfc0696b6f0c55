package chartpush

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// ChartDir is the chart of this repository, relative to its root.
const ChartDir = "charts/k8s-selfhost-repo"

// CommitTime is the committer time of HEAD in the git checkout dir: the
// archive's mtimes and the created annotation when SOURCE_DATE_EPOCH is not
// set, as for the images, so a commit always gives the same artifact.
func CommitTime(ctx context.Context, dir string) (time.Time, error) {
	cmd := exec.CommandContext(ctx, "git", "-C", dir, "log", "-1", "--format=%ct", "HEAD")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return time.Time{}, fmt.Errorf("commit time of HEAD: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	sec, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("commit time of HEAD: %q: %w", out, err)
	}
	return time.Unix(sec, 0).UTC(), nil
}
