package harness

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
)

// MachineInfo is the header of a benchmark report: CPU, cores, memory,
// kernel, the load at the start (other work on the machine skews every
// number, so the report says how much there was), and the revision of
// the code measured — what is called, with "+ uncommitted changes" when
// any of paths differs from HEAD.
func MachineInfo(what string, paths ...string) []string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if l, _, ok := strings.Cut(string(b), "\n"); ok {
			mem = strings.Join(strings.Fields(strings.TrimPrefix(l, "MemTotal:")), " ")
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	host, _ := os.Hostname()
	rev := "unknown"
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		rev = strings.TrimSpace(string(out))
		args := append([]string{"status", "--porcelain", "--"}, paths...)
		if st, err := exec.Command("git", args...).Output(); err == nil && len(st) > 0 {
			rev += " + uncommitted changes"
		}
	}
	return []string{
		fmt.Sprintf("machine: %s, %d cores (GOMAXPROCS %d), %s RAM, Linux %s, host %s", cpu, runtime.NumCPU(), runtime.GOMAXPROCS(0), mem, strings.TrimSpace(string(kernel)), host),
		fmt.Sprintf("load average at the start (1, 5, 15 min): %s", LoadAvg()),
		fmt.Sprintf("go: %s %s/%s; %s: working tree at %s", runtime.Version(), runtime.GOOS, runtime.GOARCH, what, rev),
	}
}

// LoadAvg is the 1, 5 and 15 minute load averages, "1.52, 1.93, 3.12".
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if err != nil || len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], ", ")
}
