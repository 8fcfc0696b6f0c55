//go:build bench

package edge

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

// manifestAccept is what containerd sends for a manifest.
var manifestAccept = strings.Join([]string{
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
}, ", ")

// manifestRows: row 7. The same cached manifest from the long-lived edge
// (FS store) and docker-registry proxy (FS storage), at a fixed rate
// (open loop, Go) and at the ceiling (wrk, closed loop).
func (e *env) manifestRows() {
	t, im := e.t, e.small
	hdr := http.Header{"Accept": {manifestAccept}}
	edgeBase := e.edgeFS.URL + "/v2/" + prefix + "/" + im.Repo + "/manifests/"
	regBase := e.regFS.URL + "/v2/" + im.Repo + "/manifests/"
	urls := map[string]string{
		"edge digest": edgeBase + im.Digest, "registry digest": regBase + im.Digest,
		"edge tag": edgeBase + im.Tag, "registry tag": regBase + im.Tag,
	}
	// The first GET fills each cache; the second proves the edge answers
	// from storage.
	for name, url := range urls {
		for i := 0; i < 2; i++ {
			if err := manifestGet(context.Background(), e.client, url, hdr); err != nil {
				t.Fatalf("prime %s: %v", name, err)
			}
		}
		if strings.HasPrefix(name, "edge") {
			if err := e.wantManifestHit(url, hdr); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
	}

	// At the target rate, and at a low one that docker-registry can keep
	// up with too, so that its hit latency shows without queueing.
	dur, grace := e.cfg.rateFor, e.cfg.grace
	runs := []struct {
		name string
		rate int
	}{
		{"edge digest", e.cfg.rate}, {"registry digest", e.cfg.rate},
		{"edge tag", e.cfg.rate}, {"registry tag", e.cfg.rate},
		{"edge digest", e.cfg.lowRate}, {"registry digest", e.cfg.lowRate},
	}
	res := map[string]latencies{}
	for _, run := range runs {
		// An overloaded peer (and the upstream behind it) keeps working off
		// its backlog after a run ended; the next run must not share the
		// CPU with that.
		quiesce(t)
		ctx, cancel := measureCtx()
		key := fmt.Sprintf("%s@%d", run.name, run.rate)
		res[key] = openLoop(ctx, e.client, urls[run.name], hdr, run.rate, dur, grace)
		cancel()
		t.Logf("%s req/s: %+v", key, res[key])
	}
	at := func(rate int) string { return fmt.Sprintf("at %d req/s for %v, open loop", rate, dur) }
	hi, lo := e.cfg.rate, e.cfg.lowRate
	p50 := func(l latencies) time.Duration { return l.P50 }
	p99 := func(l latencies) time.Duration { return l.P99 }
	key := func(name string, rate int) latencies { return res[fmt.Sprintf("%s@%d", name, rate)] }
	e.latencyRow("7a", "manifest hit by digest, p50 "+at(hi), key("edge digest", hi), key("registry digest", hi), p50)
	e.latencyRow("7b", "manifest hit by digest, p99 "+at(hi), key("edge digest", hi), key("registry digest", hi), p99)
	e.latencyRow("7c", "manifest hit by digest, p99 "+at(lo)+" (a rate docker-registry sustains)", key("edge digest", lo), key("registry digest", lo), p99)
	e.latencyRow("7d", "manifest by tag, p99 "+at(hi)+" (edge: tag cached within its TTL; docker-registry proxy asks the upstream for every tag)",
		key("edge tag", hi), key("registry tag", hi), p99)

	wrk := harness.Binary(t, "wrk", "WRK", "apt-get install -y --no-install-recommends wrk")
	const conns = 16
	what := fmt.Sprintf("manifest hit by digest, wrk closed loop (1 thread, %d connections, %v): req/s (p99)", conns, e.cfg.wrkFor)
	var got [2]wrkResult
	for i, url := range []string{urls["edge digest"], urls["registry digest"]} {
		quiesce(t)
		ctx, cancel := measureCtx()
		r, err := runWrk(ctx, wrk, url, manifestAccept, conns, e.cfg.wrkFor)
		cancel()
		if err != nil {
			e.broken("7e", what, err)
			return
		}
		got[i] = r
	}
	cell := func(r wrkResult) string { return fmt.Sprintf("%.0f req/s (p99 %s)", r.ReqPerSec, ms(r.P99)) }
	e.tb.add(ratioRow(row{ID: "7e", What: what, Edge: cell(got[0]), Base: cell(got[1]), Target: "≥ 1.0"},
		got[0].ReqPerSec/got[1].ReqPerSec, 1.0))
}

func (e *env) wantManifestHit(url string, hdr http.Header) error {
	req, err := http.NewRequest(http.MethodHead, url, nil)
	if err != nil {
		return err
	}
	req.Header = hdr.Clone()
	resp, err := e.client.Do(req)
	if err != nil {
		return fmt.Errorf("HEAD %s: %w", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Cache") != "HIT" {
		return fmt.Errorf("HEAD %s: status %d, X-Cache %q: not a cache hit", url, resp.StatusCode, resp.Header.Get("X-Cache"))
	}
	return nil
}

// latencyRow compares one latency figure; lower is better, so the ratio is
// baseline/edge. Unanswered requests (open loop past saturation) are part
// of the result, errors are not: more than 0.1% of them means the run did
// not measure what it claims.
func (e *env) latencyRow(id, what string, edge, base latencies, pick func(latencies) time.Duration) {
	for _, l := range []latencies{edge, base} {
		if l.Errors*1000 > l.Sent {
			e.broken(id, what, fmt.Errorf("%d of %d requests failed, first: %v", l.Errors, l.Sent, l.FirstErr))
			return
		}
	}
	cell := func(l latencies) string {
		s := fmt.Sprintf("%s (p50 %s, p99.9 %s", l.pct(pick(l)), l.pct(l.P50), l.pct(l.P999))
		if l.Unanswered > 0 {
			s += fmt.Sprintf("; %d of %d unanswered %v after the last send", l.Unanswered, l.Sent, l.Grace)
		}
		return s + ")"
	}
	r := row{ID: id, What: what, Edge: cell(edge), Base: cell(base), Target: "≥ 1.0"}
	pe, pb := pick(edge), pick(base)
	switch {
	case pe == unanswered && pb == unanswered:
		r.Ratio = "—"
		r.Met = "no"
	case pe == unanswered:
		r.Ratio, r.Met = "< 1", "no"
	case pb == unanswered:
		r.Ratio, r.Met = fmt.Sprintf("> %.0f", float64(base.Grace)/float64(pe)), "yes"
	default:
		r = ratioRow(r, float64(pb)/float64(pe), 1.0)
	}
	e.tb.add(r)
}

// herdRow: row 5. clients request one cold blob at the same moment; a
// counting proxy in front of the upstream sees every upstream GET.
func (e *env) herdRow() {
	t, n := e.t, e.cfg.herdClients
	b, err := writeRandomBlob(e.up.Root, "bench/herd", e.cfg.herdSize)
	if err != nil {
		t.Fatalf("herd blob: %v", err)
	}
	defer removeLayoutBlob(t, e.up.Root, b)

	counting := func() (*harness.FaultProxy, string) {
		fp, err := harness.NewFaultProxy(e.up.URL)
		if err != nil {
			t.Fatalf("counting proxy: %v", err)
		}
		srv := httptest.NewServer(fp)
		t.Cleanup(srv.Close)
		return fp, srv.URL
	}
	edgeCount, edgeUp := counting()
	regCount, regUp := counting()
	ed := harness.StartEdge(t, "--upstream", prefix+"="+edgeUp)
	reg := harness.StartDockerRegistryProxy(t, regUp)
	defer func() {
		ed.Stop()
		reg.Stop()
		os.RemoveAll(ed.Storage)
		os.RemoveAll(reg.Root)
	}()

	what := fmt.Sprintf("%d concurrent clients, one cold %s blob", n, mibLabel(b.Size))
	quiesce(t)
	edgeWall, err := herd(edgeBlobURL(ed, b), b.Size, n)
	if err != nil {
		e.broken("5", what, fmt.Errorf("edge: %w", err))
		return
	}
	quiesce(t)
	regWall, regErr := herd(regBlobURL(reg, b), b.Size, n)
	// Every client holds a response in flight at once: the edge's peak
	// memory here is its per-request cost times n.
	edgePeak, perr := ed.Proc.MemStatus("VmHWM")
	regPeak, _ := reg.Proc.MemStatus("VmHWM")
	edgeGets := edgeCount.Count(http.MethodGet, "blobs", b.Digest)
	metric := ed.Metric(t, "edge_upstream_requests_total", map[string]string{"kind": "blob", "method": http.MethodGet})

	regGetsCell, regWallCell := fmt.Sprint(regCount.Count(http.MethodGet, "blobs", b.Digest)), ""
	if regErr != nil {
		// The peer's failure is part of the comparison, not a broken
		// benchmark: say what happened.
		regGetsCell += " (some clients failed: " + firstLine(regErr.Error()) + ")"
		regWallCell = "failed: " + firstLine(regErr.Error())
	} else {
		regWallCell = fmt.Sprintf("%.2f s (peak RSS %s)", regWall.Seconds(), mib(regPeak))
	}
	edgeWallCell := fmt.Sprintf("%.2f s", edgeWall.Seconds())
	if perr == nil {
		edgeWallCell += fmt.Sprintf(" (peak RSS %s)", mib(edgePeak))
	}
	r := row{ID: "5a", What: what + ": upstream blob GETs (counted at a proxy in front of the upstream)",
		Edge: fmt.Sprintf("%d (edge_upstream_requests_total{kind=\"blob\"}: %.0f)", edgeGets, metric),
		Base: "docker-registry proxy: " + regGetsCell, Target: "= 1", Met: yesNo(edgeGets == 1 && metric == 1)}
	e.tb.add(r)
	r = row{ID: "5b", What: what + ": wall time until every client has the whole blob",
		Edge: edgeWallCell, Base: regWallCell, Target: "≥ 1.0"}
	if regErr == nil {
		r = ratioRow(r, regWall.Seconds()/edgeWall.Seconds(), 1.0)
	}
	e.tb.add(r)
}

// herd starts n downloads of url at once and returns the time until the
// last one finished, or the first failure.
func herd(url string, size int64, n int) (time.Duration, error) {
	c := newClient()
	defer c.CloseIdleConnections()
	ctx, cancel := measureCtx()
	defer cancel()
	start := make(chan struct{})
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if _, err := get(ctx, c, url, size); err != nil {
				errs <- err
			}
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	wall := time.Since(t0)
	close(errs)
	failed := len(errs)
	if err := <-errs; err != nil {
		return wall, fmt.Errorf("%d of %d clients failed, first: %w", failed, n, err)
	}
	return wall, nil
}

// rssRow: row 6. clients pull different cold blobs at once through a fresh
// edge; the kernel's VmHWM of the edge process is the peak. The same load
// goes through a fresh docker-registry proxy for comparison.
func (e *env) rssRow() {
	t, n, size := e.t, e.cfg.rssClients, e.cfg.rssSize
	what := fmt.Sprintf("peak RSS (VmHWM) while %d clients pull different cold %s blobs, FS store", n, mibLabel(size))
	// The edge holds a spool and a store copy of every blob in flight.
	need := 2*int64(n)*size + 2<<30
	if free := freeBytes(os.TempDir()); free < need {
		e.tb.add(row{ID: "6", What: what, Edge: fmt.Sprintf("skipped: %s needs %d GiB free, has %d GiB", os.TempDir(), need>>30, free>>30), Target: "< 128 MiB"})
		return
	}
	blobs, err := sparseBlobs(e.up.Root, "bench/rss", n, size)
	if err != nil {
		t.Fatalf("rss blobs: %v", err)
	}
	defer func() {
		for _, b := range blobs {
			removeLayoutBlob(t, e.up.Root, b)
		}
	}()
	if err := e.checkUpstream(blobs[0]); err != nil {
		t.Fatal(err)
	}

	ed := harness.StartEdge(t, "--upstream", prefix+"="+e.up.URL)
	idle, _ := ed.Proc.MemStatus("VmRSS")
	quiesce(t)
	edgeWall, err := pullAll(blobs, func(b layoutBlob) string { return edgeBlobURL(ed, b) })
	if err == nil {
		err = e.settled(ed)
	}
	peak, merr := ed.Proc.MemStatus("VmHWM")
	ed.Stop()
	os.RemoveAll(ed.Storage)
	if err == nil {
		err = merr
	}
	if err != nil {
		e.broken("6", what, err)
		return
	}

	reg := harness.StartDockerRegistryProxy(t, e.up.URL)
	quiesce(t)
	regWall, regErr := pullAll(blobs, func(b layoutBlob) string { return regBlobURL(reg, b) })
	quiesce(t) // its background store writes run past the clients
	regPeak, merr := reg.Proc.MemStatus("VmHWM")
	reg.Stop()
	os.RemoveAll(reg.Root)
	if regErr == nil {
		regErr = merr
	}

	total := float64(int64(n)*size) / 1e6
	r := row{ID: "6", What: what,
		Edge:   fmt.Sprintf("%s (idle %s; %.0f MB in %.0f s)", mib(peak), mib(idle), total, edgeWall.Seconds()),
		Target: "< 128 MiB", Met: yesNo(peak < 128<<20)}
	if regErr != nil {
		r.Base = "docker-registry proxy failed: " + firstLine(regErr.Error())
	} else {
		r.Base = fmt.Sprintf("docker-registry proxy: %s (%.0f MB in %.0f s)", mib(regPeak), total, regWall.Seconds())
		r.Ratio = fmt.Sprintf("%.2f", float64(regPeak)/float64(peak))
	}
	e.tb.add(r)
	e.rssS3Row()
}

// rssS3Row: row 6b, the same load on the S3 store, whose multipart writer
// buffers parts in memory. Smaller blobs carry the same information: the
// buffers per fill do not grow with the blob.
func (e *env) rssS3Row() {
	t, n, size := e.t, e.cfg.rssClients, e.cfg.rssS3Size
	what := fmt.Sprintf("peak RSS (VmHWM) while %d clients pull different cold %s blobs, S3 store (versitygw)", n, mibLabel(size))
	if need := 3*int64(n)*size + 2<<30; freeBytes(os.TempDir()) < need {
		e.tb.add(row{ID: "6b", What: what, Edge: fmt.Sprintf("skipped: %s needs %d GiB free", os.TempDir(), need>>30), Target: "< 128 MiB"})
		return
	}
	blobs, err := sparseBlobs(e.up.Root, "bench/rss-s3", n, size)
	if err != nil {
		t.Fatalf("rss blobs: %v", err)
	}
	s3c := e.s3.Client()
	defer func() {
		for _, b := range blobs {
			removeLayoutBlob(t, e.up.Root, b)
			deleteObject(s3c, e.s3.Bucket, edgeS3Key("edge-rss", b))
			deleteObject(s3c, regS3Bucket, "rss/"+regDataPath(b))
		}
	}()
	ed := harness.StartEdgeWith(t, harness.EdgeOptions{
		Args: append([]string{"--upstream", prefix + "=" + e.up.URL}, e.s3.EdgeArgs("edge-rss")...), Env: e.s3.EdgeEnv()})
	idle, _ := ed.Proc.MemStatus("VmRSS")
	quiesce(t)
	wall, err := pullAll(blobs, func(b layoutBlob) string { return edgeBlobURL(ed, b) })
	if err == nil {
		err = e.settled(ed)
	}
	peak, merr := ed.Proc.MemStatus("VmHWM")
	ed.Stop()
	if err == nil {
		err = merr
	}
	if err != nil {
		e.broken("6b", what, err)
		return
	}
	total := float64(int64(n)*size) / 1e6
	r := row{ID: "6b", What: what,
		Edge:   fmt.Sprintf("%s (idle %s; %.0f MB in %.0f s)", mib(peak), mib(idle), total, wall.Seconds()),
		Target: "< 128 MiB", Met: yesNo(peak < 128<<20)}
	if e.regS3Err != nil {
		r.Base = "docker-registry proxy (S3): not available"
		e.tb.add(r)
		return
	}
	reg, err := harness.StartDockerRegistryS3Proxy(t, e.up.URL, e.s3, regS3Bucket, "/rss")
	if err != nil {
		r.Base = "docker-registry proxy (S3) failed to start: " + firstLine(err.Error())
		e.tb.add(r)
		return
	}
	quiesce(t)
	regWall, regErr := pullAll(blobs, func(b layoutBlob) string { return regBlobURL(reg, b) })
	quiesce(t) // its background store writes run past the clients
	regPeak, merr := reg.Proc.MemStatus("VmHWM")
	reg.Stop()
	if regErr == nil {
		regErr = merr
	}
	if regErr != nil {
		r.Base = "docker-registry proxy (S3) failed: " + firstLine(regErr.Error())
	} else {
		r.Base = fmt.Sprintf("docker-registry proxy (S3): %s (%.0f MB in %.0f s)", mib(regPeak), total, regWall.Seconds())
		r.Ratio = fmt.Sprintf("%.2f", float64(regPeak)/float64(peak))
	}
	e.tb.add(r)
}

// quiesce writes dirty pages back and waits until the machine is idle, so
// that a measurement never shares the CPU or the disk with the leftovers of
// the previous one (a peer's backlog, a background store write).
func quiesce(t *testing.T) {
	settleDisk()
	quiesced.total++
	if err := waitMachineIdle(30 * time.Second); err != nil {
		// Other work on the machine (the benchmark does not own it): the
		// measurement goes ahead and the table says how often this
		// happened.
		quiesced.busy++
		t.Logf("measuring anyway: %v", err)
	}
}

// quiesced counts the measurements, and those that started on a busy
// machine. The benchmark runs sequentially, so it needs no lock.
var quiesced struct{ total, busy int }

// waitMachineIdle waits until all CPUs together are busy less than 10% of
// the time over two consecutive quarter seconds.
func waitMachineIdle(timeout time.Duration) error {
	const tick = 250 * time.Millisecond
	prevBusy, prevTotal, err := cpuStat()
	if err != nil {
		return err
	}
	quiet := 0
	var frac float64
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		time.Sleep(tick)
		busy, total, err := cpuStat()
		if err != nil {
			return err
		}
		frac = float64(busy-prevBusy) / float64(max(1, total-prevTotal))
		prevBusy, prevTotal = busy, total
		if frac < 0.10 {
			if quiet++; quiet == 2 {
				return nil
			}
		} else {
			quiet = 0
		}
	}
	return fmt.Errorf("machine still %.0f%% busy after %v", frac*100, timeout)
}

// cpuStat returns the busy and total jiffies of all CPUs (/proc/stat).
// iowait counts as idle: a CPU waiting for the disk is free to compute.
func cpuStat() (busy, total int64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, fmt.Errorf("cpu usage: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("cpu usage: unexpected /proc/stat line %q", line)
	}
	// user nice system idle iowait irq softirq steal; guest time is
	// already part of user.
	for i, v := range f[1:min(len(f), 9)] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("cpu usage: %w", err)
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total, nil
}

// settled waits until the edge has finished every fill, store commits
// included: they run past the clients (an edge may upload to S3 after it
// served the bytes), and the peak must include them.
func (e *env) settled(ed *harness.Edge) error {
	return waitFor("edge fills to finish (edge_fills_in_flight 0)", 5*time.Minute, func() bool {
		return ed.Metric(e.t, "edge_fills_in_flight", nil) == 0
	})
}

// pullAll downloads every blob at once, one client each.
func pullAll(blobs []layoutBlob, url func(layoutBlob) string) (time.Duration, error) {
	c := newClient()
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	errs := make(chan error, len(blobs))
	var wg sync.WaitGroup
	t0 := time.Now()
	for _, b := range blobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := get(ctx, c, url(b), b.Size); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	wall := time.Since(t0)
	close(errs)
	if err := <-errs; err != nil {
		return wall, err
	}
	return wall, nil
}

// freeBytes is the space available to an unprivileged writer under dir.
func freeBytes(dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0
	}
	return int64(st.Bavail) * st.Bsize
}
