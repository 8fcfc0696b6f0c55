package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/testkit"
)

// startTimeout bounds how long any server may take to become ready. Every
// server here starts in well under 3 s on the CI machine; the margin covers
// a loaded 2-core runner with the race detector on.
const startTimeout = 60 * time.Second

// Process is a child process whose combined output goes to a log file.
type Process struct {
	Name    string
	LogPath string

	cmd      *exec.Cmd
	done     chan struct{}
	waitErr  error
	stopOnce sync.Once
}

// scrubbedEnv is the parent environment without the variables that change
// the behaviour of the children behind the test's back: AWS_CA_BUNDLE makes
// docker-registry panic and the AWS SDK fail when it points at a missing
// file, and EDGE_* would silently override the flags the test passes.
func scrubbedEnv(extra []string) []string {
	drop := map[string]bool{}
	for _, kv := range extra {
		k, _, _ := strings.Cut(kv, "=")
		drop[k] = true
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if drop[k] || k == "AWS_CA_BUNDLE" || strings.HasPrefix(k, "EDGE_") || strings.HasPrefix(k, "REGISTRY_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// startProcess starts bin with args in its own process group (so a stop
// also reaches anything it forks) and logs to a file in logDir.
func startProcess(name, bin string, args, env []string, logDir string) (*Process, error) {
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log of %s: %w", name, err)
	}
	fmt.Fprintf(f, "=== %s %s\n", bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Env = scrubbedEnv(env)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close() // the start error is the one to report
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		// The child wrote through its own descriptor, now closed; ours
		// wrote one header line, and a log has nobody to tell.
		_ = f.Close()
		close(p.done)
	}()
	return p, nil
}

// startProcessIn is startProcess behind a command prefix such as
// Netns.Wrap (nsenter execs bin in place, so signals reach it directly);
// an empty wrap runs bin as is.
func startProcessIn(wrap []string, name, bin string, args, env []string, logDir string) (*Process, error) {
	if len(wrap) == 0 {
		return startProcess(name, bin, args, env, logDir)
	}
	full := append(append(append([]string(nil), wrap[1:]...), bin), args...)
	return startProcess(name, wrap[0], full, env, logDir)
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM to the process group, waits up to 10 s and then kills
// it. It is idempotent.
func (p *Process) Stop() {
	p.stopOnce.Do(func() {
		pgid := -p.cmd.Process.Pid
		_ = syscall.Kill(pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(pgid, syscall.SIGKILL)
			<-p.done
		}
		// Children that ignored SIGTERM and outlived the leader.
		_ = syscall.Kill(pgid, syscall.SIGKILL)
	})
}

// Kill ends the process group at once, like a crash.
func (p *Process) Kill() {
	p.stopOnce.Do(func() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	})
}

// LogTail returns at most the last limit bytes of the process log.
func (p *Process) LogTail(limit int64) string {
	f, err := os.Open(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(log unavailable: %v)", err)
	}
	defer func() { _ = f.Close() }() // read-only
	if st, err := f.Stat(); err == nil && st.Size() > limit {
		_, _ = f.Seek(st.Size()-limit, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// cleanupProcess stops p when the test ends and shows its log on failure.
func cleanupProcess(t testing.TB, p *Process) {
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("---- log of %s (%s), last 64 KiB ----\n%s\n---- end of %s log ----",
				p.Name, p.LogPath, p.LogTail(64<<10), p.Name)
		}
	})
}

// waitReady polls check until it succeeds, the process exits or the
// deadline passes.
func waitReady(p *Process, check func(context.Context) error) error {
	// The poll ends early when the process exits: it will not get ready.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := testkit.Poll(ctx, startTimeout, func() error {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		defer ccancel()
		return check(cctx)
	})
	switch {
	case err == nil:
		return nil
	case p.Exited():
		return fmt.Errorf("%s exited before it was ready (%v); log:\n%s", p.Name, p.waitErr, p.LogTail(8<<10))
	default:
		return fmt.Errorf("%s not ready: %w; log:\n%s", p.Name, err, p.LogTail(8<<10))
	}
}

// errPortInUse marks a start attempt that lost the race for its port.
var errPortInUse = errors.New("address already in use")

// startWithPorts calls start with n fresh ports (testkit.FreePortErr), again
// when the attempt failed because a port was taken in the meantime.
func startWithPorts(n int, start func(ports []int) error) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		ports := make([]int, n)
		for i := range ports {
			if ports[i], err = testkit.FreePortErr(); err != nil {
				return err
			}
		}
		err = start(ports)
		if err == nil || !errors.Is(err, errPortInUse) {
			return err
		}
	}
	return err
}

// portError turns a start failure whose log says the port was taken into
// errPortInUse, so that startWithPorts retries.
func portError(p *Process, err error) error {
	if err != nil && strings.Contains(p.LogTail(8<<10), "address already in use") {
		return fmt.Errorf("%w: %v", errPortInUse, err)
	}
	return err
}
