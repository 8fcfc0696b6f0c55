package harness

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// EdgeBinary returns the edge binary: $HARNESS_EDGE_BIN when set (test/all.sh
// builds it once for every package), else ./edge/cmd/edge built once per test
// binary. It is a plain build, not -race: the race detector belongs to the
// test process, and a 10× slower server would distort the timings tests rely
// on.
func EdgeBinary(t testing.TB) string {
	t.Helper()
	return goBinary(t, "HARNESS_EDGE_BIN", "./edge/cmd/edge")
}

// EdgeOptions configures StartEdgeWith.
type EdgeOptions struct {
	// Args are extra command-line flags. --listen and --metrics-listen are
	// always set by the harness; --storage defaults to a temporary
	// directory unless Args has one.
	Args []string
	// Env is extra environment (KEY=VALUE), e.g. S3 credentials.
	Env []string
}

// Edge is a running edge binary.
type Edge struct {
	// Addr is host:port of the registry listener.
	Addr string
	// URL is http://Addr.
	URL string
	// MetricsURL is the Prometheus endpoint, http://.../metrics.
	MetricsURL string
	// Storage is the --storage value (a directory unless S3 was given).
	Storage string
	// Proc is the current process (Restart replaces it).
	Proc *Process

	bin, dir    string
	args, env   []string
	metricsAddr string
}

// StartEdge starts the edge with args and filesystem storage in a temporary
// directory unless args set --storage.
func StartEdge(t testing.TB, args ...string) *Edge {
	t.Helper()
	return StartEdgeWith(t, EdgeOptions{Args: args})
}

// StartEdgeWith starts the edge with opts.
func StartEdgeWith(t testing.TB, opts EdgeOptions) *Edge {
	t.Helper()
	e := &Edge{bin: EdgeBinary(t), dir: t.TempDir(), env: opts.Env}
	args := append([]string(nil), opts.Args...)
	if v, ok := flagValue(args, "--storage"); ok {
		e.Storage = v
	} else {
		e.Storage = filepath.Join(e.dir, "store")
		args = append(args, "--storage", e.Storage)
	}
	err := startWithPorts(2, func(ports []int) error {
		e.Addr = fmt.Sprintf("127.0.0.1:%d", ports[0])
		e.metricsAddr = fmt.Sprintf("127.0.0.1:%d", ports[1])
		e.args = append([]string{"--listen", e.Addr, "--metrics-listen", e.metricsAddr}, args...)
		return e.start()
	})
	if err != nil {
		t.Fatalf("start edge: %v", err)
	}
	e.URL = "http://" + e.Addr
	e.MetricsURL = "http://" + e.metricsAddr + "/metrics"
	t.Cleanup(func() {
		e.Proc.Stop()
		if t.Failed() {
			t.Logf("---- log of edge %s, last 64 KiB ----\n%s\n---- end of edge log ----", e.Addr, e.Proc.LogTail(64<<10))
		}
	})
	return e
}

func (e *Edge) start() error {
	args := e.args
	if _, ok := flagValue(args, "--shutdown-delay"); !ok {
		// Tests stop edges often and have no endpoints to drain; a test of
		// the drain sets the flag itself.
		args = append(args[:len(args):len(args)], "--shutdown-delay=0s")
	}
	p, err := startProcess("edge", e.bin, args, e.env, e.dir)
	if err != nil {
		return err
	}
	err = waitReady(p, func(ctx context.Context) error {
		// Liveness, not /v2/: an edge with --control-plane answers 503 on
		// /v2/ until its namespace's configuration is applied, and tests
		// wait for that on /readyz.
		if err := httpStatus(ctx, "http://"+e.Addr+"/healthz", http.StatusOK); err != nil {
			return err
		}
		return httpStatus(ctx, "http://"+e.metricsAddr+"/metrics", http.StatusOK)
	})
	if err != nil {
		p.Stop()
		return portError(p, err)
	}
	e.Proc = p
	return nil
}

// Stop stops the edge gracefully.
func (e *Edge) Stop() { e.Proc.Stop() }

// Terminate sends SIGTERM to the edge process alone, as the kubelet does
// when a pod is deleted, and returns at once; WaitExit then waits for it.
func (e *Edge) Terminate(t testing.TB) {
	t.Helper()
	if err := e.Proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM edge: %v", err)
	}
}

// WaitExit waits up to timeout for the edge process to exit and returns
// how it ended: nil for exit code 0.
func (e *Edge) WaitExit(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-e.Proc.done:
		return e.Proc.waitErr
	case <-time.After(timeout):
		t.Fatalf("edge %s still running %v after SIGTERM", e.Addr, timeout)
		return nil
	}
}

// Restart stops the edge and starts it again with the same flags, ports and
// storage, as a pod restart would.
func (e *Edge) Restart(t testing.TB) {
	t.Helper()
	e.Proc.Stop()
	if err := e.start(); err != nil {
		t.Fatalf("restart edge: %v", err)
	}
}

// flagValue finds --name VALUE or --name=VALUE in args.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// Metrics returns the edge's Prometheus exposition text.
func (e *Edge) Metrics(t testing.TB) string {
	t.Helper()
	b, err := httpGet(context.Background(), e.MetricsURL)
	if err != nil {
		t.Fatalf("scrape edge metrics: %v", err)
	}
	return string(b)
}

// Metric returns the sum of every sample of name whose labels include all
// of labels (nil matches every series); 0 when there is none, as Prometheus
// counters start at an absent 0.
func (e *Edge) Metric(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	samples, err := ParseMetrics(e.Metrics(t))
	if err != nil {
		t.Fatalf("parse edge metrics: %v", err)
	}
	return SumSamples(samples, name, labels)
}
