//go:build bench

package kube

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// unlimited is a client of the admin config without client-side rate
// limiting (QPS < 0), for the benchmark's own bulk writes.
func unlimited(t *testing.T, cfg *rest.Config) kubernetes.Interface {
	t.Helper()
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = -1, 0
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// parallel runs do(i) for i in [0, n) on workers goroutines and returns
// the number of failures and the first error.
func parallel(n, workers int, do func(i int) error) (int, error) {
	var failed atomic.Int64
	var first error
	var once sync.Once
	idx := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				if err := do(i); err != nil {
					failed.Add(1)
					once.Do(func() { first = err })
				}
			}
		}()
	}
	for i := range n {
		idx <- i
	}
	close(idx)
	wg.Wait()
	return int(failed.Load()), first
}

// bulkBase is the baseline of a bulk row: the benchmark creating n
// namespaces and the same 4n objects with workers goroutines.
type bulkBase struct {
	took    time.Duration
	objects int
	workers int
}

// bulkBaseline runs on the single-row cluster after its rows: n
// unlabelled namespaces, each with four edge-like objects, created by
// workers goroutines without client-side rate limiting.
func bulkBaseline(t *testing.T, c *cluster, n, workers int) bulkBase {
	t.Helper()
	client := unlimited(t, c.kube.Config)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	failed, err := parallel(n, workers, func(i int) error {
		ns := fmt.Sprintf("bulkbase-w%d-%04d", workers, i)
		if err := createNamespace(ctx, client, ns, false); err != nil {
			return err
		}
		return createEdgeLike(ctx, client, ns)
	})
	took := time.Since(start)
	if failed > 0 {
		t.Fatalf("baseline: %d of %d namespaces failed, the first: %v", failed, n, err)
	}
	t.Logf("baseline: %d namespaces and %d objects with %d workers in %v", n, 4*n, workers, took)
	return bulkBase{took: took, objects: 4 * n, workers: workers}
}

// measureBulk is row 4 on a fresh cluster: n namespaces created with the
// label at once, time until every edge object exists, and the control
// plane's memory.
func measureBulk(t *testing.T, s settings, workers int, base bulkBase) []row {
	t.Helper()
	n := s.bulkNS
	c := startCluster(t, workers)
	pid := c.cp.Pid()
	w := startWatcher(t, c.kube.Client, managedSelector, func(ns, _ string) bool { return strings.HasPrefix(ns, "bulk-") })
	defer w.stop()
	time.Sleep(2 * time.Second) // start-up garbage collected
	rss0, err := harness.MemStatus(pid, "VmRSS")
	if err != nil {
		t.Fatal(err)
	}
	var peakSampled atomic.Int64
	peakSampled.Store(rss0)
	sampleCtx, stopSampling := context.WithCancel(context.Background())
	defer stopSampling()
	go func() {
		for sampleCtx.Err() == nil {
			if v, err := harness.MemStatus(pid, "VmRSS"); err == nil && v > peakSampled.Load() {
				peakSampled.Store(v)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}()

	client := unlimited(t, c.kube.Config)
	ctx, cancel := context.WithTimeout(context.Background(), s.bulkTimeout+5*time.Minute)
	defer cancel()
	start := time.Now()
	failed, ferr := parallel(n, 16, func(i int) error {
		return createNamespace(ctx, client, fmt.Sprintf("bulk-%04d", i), true)
	})
	nsTook := time.Since(start)
	if failed > 0 {
		t.Fatalf("%d of %d labelled namespaces not created, the first: %v", failed, n, ferr)
	}
	want := 4 * n
	deadline := start.Add(s.bulkTimeout)
	var progress []string
	nextMark := start.Add(30 * time.Second)
	for {
		got, _ := w.counts()
		if got >= want || time.Now().After(deadline) {
			break
		}
		c.alive(t)
		if time.Now().After(nextMark) {
			progress = append(progress, fmt.Sprintf("%d@%ds", got, int(time.Since(start).Seconds())))
			nextMark = nextMark.Add(30 * time.Second)
		}
		select {
		case <-w.changed:
		case <-time.After(200 * time.Millisecond):
		}
	}
	got, last := w.counts()
	took := last.Sub(start)
	t.Logf("workers %d: %d/%d objects, last after %v; namespaces created in %v; progress %v", workers, got, want, took, nsTook, progress)
	time.Sleep(2 * time.Second)
	rssEnd, err := harness.MemStatus(pid, "VmRSS")
	if err != nil {
		t.Fatal(err)
	}
	hwm, err := harness.MemStatus(pid, "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	throttled := countInFile(c.cp.Proc.LogPath, "client-side throttling")
	rate := float64(got) / took.Seconds()

	r := row{name: fmt.Sprintf("reconcile %d namespaces labelled at once → all %d edge objects exist, --workers %d", n, want, workers)}
	if base.took > 0 {
		r.base = fmt.Sprintf("the benchmark creating %d namespaces + %d such objects itself, %d goroutines, no client rate limit: %s (%.0f objects/s)",
			n, base.objects, base.workers, ms(base.took), float64(base.objects)/base.took.Seconds())
	} else {
		r.base = "not measured (the single-cluster rows were not run)"
	}
	if got >= want {
		r.this = fmt.Sprintf("all %d in %s (%.1f objects/s)", want, ms(took), rate)
		r.ratio = times(ratio(took, base.took))
	} else {
		est := time.Duration(float64(want) / rate * float64(time.Second))
		r.this = fmt.Sprintf("**incomplete**: %d/%d after %s (%.1f objects/s; at that rate all in ≈ %s)", got, want, ms(s.bulkTimeout), rate, ms(est))
		r.ratio = "≈ " + times(ratio(est, base.took)) + " (extrapolated)"
		t.Logf("workers %d: not complete within BENCH_KUBE_RECONCILE_TIMEOUT=%v (a report, not a failure)", workers, s.bulkTimeout)
	}
	r.notes = fmt.Sprintf("namespaces created in %s; progress %s; control-plane log: %d client-go \"client-side throttling\" lines (waits > 1 s; client-go logs them throttled)",
		ms(nsTook), strings.Join(append(progress, fmt.Sprintf("%d@end", got)), ", "), throttled)

	m := row{name: fmt.Sprintf("control-plane memory, %d labelled namespaces, --workers %d", n, workers)}
	m.this = fmt.Sprintf("peak RSS (VmHWM) %s; RSS at the end %s; per namespace %.1f KiB", mib(hwm), mib(rssEnd), float64(rssEnd-rss0)/float64(n)/1024)
	m.base = fmt.Sprintf("RSS before the namespaces: %s", mib(rss0))
	m.ratio = "peak " + times(float64(hwm)/float64(rss0))
	m.notes = fmt.Sprintf("per namespace = (RSS at the end − RSS before) / %d; highest sampled RSS %s", n, mib(peakSampled.Load()))
	if got < want {
		m.notes += fmt.Sprintf("; only %d of %d namespaces' objects existed at the end", w.complete(), n)
	}
	return []row{r, m}
}

// countInFile counts the lines of path that contain s (-1 when unreadable).
func countInFile(path, s string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	return strings.Count(string(b), s)
}
