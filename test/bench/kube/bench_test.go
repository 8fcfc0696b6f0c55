//go:build bench

package kube

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// settings are read from the environment (see test/bench-kube.sh).
type settings struct {
	podRate     int           // pods per second per arm
	podFor      time.Duration // per arm
	hookRate    int           // webhook requests per second per arm
	hookFor     time.Duration // per arm
	inProcess   int           // in-process handler calls per arm
	labelNS     int           // namespaces labelled one by one
	bulkNS      int           // namespaces labelled at once
	workers     []int         // --workers of the bulk rows
	bulkTimeout time.Duration // per bulk row
}

func loadSettings(t *testing.T) settings {
	s := settings{podRate: 20, podFor: 20 * time.Second, hookRate: 100, hookFor: 10 * time.Second,
		inProcess: 3000, labelNS: 10, bulkNS: 1000, workers: []int{4, 16}, bulkTimeout: 120 * time.Second}
	if os.Getenv("BENCH_QUICK") == "1" {
		s = settings{podRate: 20, podFor: 4 * time.Second, hookRate: 100, hookFor: 2 * time.Second,
			inProcess: 500, labelNS: 3, bulkNS: 50, workers: []int{4}, bulkTimeout: 60 * time.Second}
	}
	atoi := func(name string, p *int) {
		if v := os.Getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				t.Fatalf("%s=%q: want a positive number", name, v)
			}
			*p = n
		}
	}
	dur := func(name string, p *time.Duration) {
		if v := os.Getenv(name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				t.Fatalf("%s=%q: want a duration such as 20s", name, v)
			}
			*p = d
		}
	}
	atoi("BENCH_KUBE_POD_RATE", &s.podRate)
	dur("BENCH_KUBE_POD_DURATION", &s.podFor)
	atoi("BENCH_KUBE_HOOK_RATE", &s.hookRate)
	dur("BENCH_KUBE_HOOK_DURATION", &s.hookFor)
	atoi("BENCH_KUBE_LABEL_NAMESPACES", &s.labelNS)
	atoi("BENCH_KUBE_NAMESPACES", &s.bulkNS)
	dur("BENCH_KUBE_RECONCILE_TIMEOUT", &s.bulkTimeout)
	if v := os.Getenv("BENCH_KUBE_WORKERS"); v != "" {
		s.workers = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				t.Fatalf("BENCH_KUBE_WORKERS=%q: want counts like 4,16", v)
			}
			s.workers = append(s.workers, n)
		}
	}
	return s
}

// row is one line of the table.
type row struct {
	name, this, base, ratio, target, notes string
}

// latRow fills this, base and ratio from two latency samples.
func latRow(r row, this, base []time.Duration) row {
	r.this = fmt.Sprintf("p50 %s, p99 %s (n=%d)", ms(percentile(this, 50)), ms(percentile(this, 99)), len(this))
	r.base = fmt.Sprintf("p50 %s, p99 %s (n=%d)", ms(percentile(base, 50)), ms(percentile(base, 99)), len(base))
	r.ratio = fmt.Sprintf("p50 %s, p99 %s", times(ratio(percentile(this, 50), percentile(base, 50))),
		times(ratio(percentile(this, 99), percentile(base, 99))))
	return r
}

func times(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", f)
}

// TestKubeBenchTable prints the table; it fails only when something
// functional breaks or a measurement cannot be made.
func TestKubeBenchTable(t *testing.T) {
	s := loadSettings(t)
	header := harness.MachineInfo("control plane", "controlplane", "injector", "kubecontract", "go.mod")
	header = append(header,
		"cluster: etcd (Debian etcd-server) + kube-apiserver v1.37.2 on 127.0.0.1, no kubelet/scheduler/controller-manager; the control plane is the real binary in in-cluster mode with the selfhost-controlplane ServiceAccount's token and deploy/rbac.yaml's RBAC, --log-level info",
		"everything (etcd, apiserver, control plane, load generator) shares the machine's cores")
	var rows []row
	var loadEnd string
	t.Run("single", func(t *testing.T) {
		c := startCluster(t, 4)
		rows = append(rows, measurePods(t, c, s)...)
		c.alive(t)
		rows = append(rows, measureWebhook(t, c, s)...)
		c.alive(t)
		rows = append(rows, measureLabel(t, c, s))
		c.alive(t)
		// The bulk rows' baselines: this apiserver, which the control
		// plane (already done with its rows) keeps watching.
		for _, w := range s.workers {
			baselines[w] = bulkBaseline(t, c, s.bulkNS, w)
		}
	})
	for _, w := range s.workers {
		t.Run(fmt.Sprintf("bulk-workers=%d", w), func(t *testing.T) {
			rows = append(rows, measureBulk(t, s, w, baselines[w])...)
		})
	}
	loadEnd = harness.LoadAvg()
	header = append(header, fmt.Sprintf("load average at the end (1, 5, 15 min): %s", loadEnd))
	table := render(header, rows)
	if out := os.Getenv("BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(table), 0o644); err != nil {
			t.Errorf("write %s: %v", out, err)
		}
		return
	}
	fmt.Printf("\n%s", table)
}

// baselines are the bulk rows' baselines by worker count.
var baselines = map[int]bulkBase{}

func render(header []string, rows []row) string {
	var b strings.Builder
	for _, h := range header {
		fmt.Fprintf(&b, "%s\n", h)
	}
	b.WriteString("\n| # | measurement | this run | baseline (same run) | ratio | target | notes |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for i, r := range rows {
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s |\n", i+1, r.name, r.this, r.base, cell(r.ratio), cell(r.target), cell(r.notes))
	}
	b.WriteString("\nLatencies are nearest-rank percentiles. Open-loop rows send at a fixed rate whatever the answers take and time each request from its scheduled start; the two arms take turns in short blocks (A, B, B, A, …) so that both see the same machine load.\n")
	b.WriteString("Targets are informational; nothing fails on time. The command fails only when something functional breaks (an image not rewritten, an object never created, the control plane exiting).\n")
	return b.String()
}

func cell(s string) string {
	if s == "" {
		return "–"
	}
	return s
}
