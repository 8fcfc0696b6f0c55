//go:build bench

package edge

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

// row is one line of the result table. Edge and Base are already
// formatted with their unit; Ratio is oriented so that ≥ 1.0 is good
// (edge/baseline for throughput, baseline/edge for times and memory), and
// is NaN-free: a row without a meaningful ratio leaves it empty.
type row struct {
	ID, What   string
	Edge, Base string
	Ratio      string
	Target     string
	// Met is "yes", "no" or "" (informational rows, failed measurements).
	Met string
}

// table collects rows in order; rows may be added from the cleanup of a
// failed test, so it is locked.
type table struct {
	mu     sync.Mutex
	header []string
	rows   []row
}

func (tb *table) add(r row) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.rows = append(tb.rows, r)
}

// markdown renders the machine header and the rows.
func (tb *table) markdown() string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	var b strings.Builder
	for _, h := range tb.header {
		fmt.Fprintf(&b, "%s  \n", h)
	}
	b.WriteString("\n| # | measurement | edge | baseline | ratio (≥1 good) | target | met? |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, r := range tb.rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n",
			r.ID, esc(r.What), esc(r.Edge), esc(r.Base), esc(r.Ratio), esc(r.Target), r.Met)
	}
	return b.String()
}

// esc keeps a cell from breaking the table.
func esc(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

// machineHeader describes where and when the numbers were taken: they mean
// nothing without it.
func machineHeader() []string {
	cpu := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "unknown"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	mem := "unknown"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	return []string{
		"## edge benchmark",
		fmt.Sprintf("date: %s", time.Now().Format(time.RFC3339)),
		fmt.Sprintf("machine: nproc=%d, CPU %q, memory %s, kernel %s, %s/%s", runtime.NumCPU(), cpu, mem, kernel, runtime.GOOS, runtime.GOARCH),
		fmt.Sprintf("edge: %s", edgeDesc()),
		fmt.Sprintf("peers: %s; %s; %s", toolVersion("docker-registry", "--version"), toolVersion("nginx", "-v"), toolVersion("wrk", "--version")),
		"client: Go net/http in the test process, body read into a 256 KiB buffer and discarded; each value is the median of the repetitions noted in its row; everything on 127.0.0.1",
	}
}

// edgeDesc says which edge build was measured (test/bench.sh sets it).
func edgeDesc() string {
	if d := os.Getenv("BENCH_EDGE_DESC"); d != "" {
		return d
	}
	if p := os.Getenv("HARNESS_EDGE_BIN"); p != "" {
		return p
	}
	return "built from the working tree by the harness"
}

// toolVersion returns the first line a tool prints about its version.
func toolVersion(bin string, arg string) string {
	path, err := exec.LookPath(bin)
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/" + bin); serr != nil {
			return bin + " (not found)"
		}
		path = "/usr/sbin/" + bin
	}
	out, _ := exec.Command(path, arg).CombinedOutput() // wrk --version exits 1
	line, _, _ := bytes.Cut(bytes.TrimSpace(out), []byte("\n"))
	return strings.TrimSpace(string(line))
}

// median returns the median of xs (the mean of the middle two for an even
// count); 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// ratioRow fills Ratio and Met from a ratio that is good when ≥ minRatio.
func ratioRow(r row, ratio, minRatio float64) row {
	r.Ratio = fmt.Sprintf("%.2f", ratio)
	r.Met = yesNo(ratio >= minRatio)
	return r
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

// mbps formats a throughput in MB/s (10^6 bytes) with its spread.
func mbps(samples []float64) string {
	if len(samples) == 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f MB/s (%.0f–%.0f, n=%d)", median(samples), slices.Min(samples), slices.Max(samples), len(samples))
}

// ms formats a duration in milliseconds with sensible precision.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case v < 10:
		return fmt.Sprintf("%.2f ms", v)
	case v < 100:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.0f ms", v)
}

// mib formats a byte count in MiB.
func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
