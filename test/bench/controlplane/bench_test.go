//go:build bench

package controlplane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	selfhostv1 "github.com/k8s-selfhost-repo/k8s-selfhost-repo/proto/gen/selfhost/v1"
	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// settings are read from the environment (see test/bench-controlplane.sh).
type settings struct {
	edges []int
	// namespaces is how many namespaces the edges are spread over (edge i
	// is in namespace i mod namespaces); 0 means one namespace per edge.
	namespaces int
	reps       int
	debounce   string
}

func loadSettings(t *testing.T) settings {
	s := settings{edges: []int{100, 1000, 5000}, namespaces: 10, reps: 10, debounce: "50ms"}
	if v := os.Getenv("BENCH_CP_EDGES"); v != "" {
		s.edges = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				t.Fatalf("BENCH_CP_EDGES=%q: want counts like 100,1000,5000", v)
			}
			s.edges = append(s.edges, n)
		}
	}
	if v := os.Getenv("BENCH_CP_NAMESPACES"); v != "" {
		n, err := strconv.Atoi(v)
		if v == "per-edge" {
			n, err = 0, nil
		}
		if err != nil || n < 0 {
			t.Fatalf("BENCH_CP_NAMESPACES=%q: want a count, or per-edge", v)
		}
		s.namespaces = n
	}
	if v := os.Getenv("BENCH_CP_REPS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("BENCH_CP_REPS=%q: want a count", v)
		}
		s.reps = n
	}
	if v := os.Getenv("BENCH_CP_DEBOUNCE"); v != "" {
		if _, err := time.ParseDuration(v); err != nil {
			t.Fatalf("BENCH_CP_DEBOUNCE=%q: %v", v, err)
		}
		s.debounce = v
	}
	return s
}

// Targets the benchmark reports in its "met?" column.
const (
	targetEdges   = 1000
	targetLastAck = time.Second
	targetPerEdge = 64 << 10
)

// row is one line of the table.
type row struct {
	n, namespaces          int
	fromReturn, fromBefore []time.Duration // per change: until the last ACK
	listedAcked            int             // fewest edges ListEdges showed on the ACKed version, over the changes
	perEdge                float64         // bytes of control-plane RSS per connected edge
	cpuPerPush             time.Duration
	streamErrors           int64
}

// TestControlPlaneBenchTable prints the table; it fails only when a
// measurement cannot be made.
func TestControlPlaneBenchTable(t *testing.T) {
	s := loadSettings(t)
	limit, err := raiseFileLimit(uint64(2*slices.Max(s.edges) + 1024))
	if err != nil {
		t.Fatal(err)
	}
	header := append(harness.MachineInfo("control plane", "controlplane", "proto", "go.mod"),
		fmt.Sprintf("control plane: controlplane --standalone, --debounce %s, state persisted (fsync) on every change; RLIMIT_NOFILE %d", s.debounce, limit),
		fmt.Sprintf("edges: in-process gRPC clients in the benchmark process, one grpc.ClientConn (TCP connection over loopback) each, ACKing every snapshot at once; %s", nsLayout(s.namespaces)),
		fmt.Sprintf("change: PutUpstream (admin gRPC) alternating the URL of one upstream, which changes every namespace's snapshot, so every edge gets a push; %d changes per row after one unmeasured warm-up change", s.reps),
	)
	var rows []row
	for _, n := range s.edges {
		ns := s.namespaces
		if ns == 0 || ns > n {
			ns = n
		}
		t.Run(fmt.Sprintf("edges=%d", n), func(t *testing.T) {
			rows = append(rows, measure(t, s, n, ns))
		})
	}
	table := render(header, rows, s.reps)
	// test/bench-controlplane.sh prints BENCH_OUT after go test's output.
	if out := os.Getenv("BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(table), 0o644); err != nil {
			t.Errorf("write %s: %v", out, err)
		}
		return
	}
	fmt.Printf("\n%s", table)
}

func nsLayout(ns int) string {
	if ns == 0 {
		return "one namespace (and edge token) per edge"
	}
	return fmt.Sprintf("spread round-robin over %d namespaces, one edge token per namespace", ns)
}

// measure runs one row against a fresh control plane.
func measure(t *testing.T, s settings, n, nsCount int) row {
	r := row{n: n, namespaces: nsCount}
	adminToken := "admin-" + randomHex(t)
	names := make([]string, nsCount)
	tokens := map[string]string{}
	var cfg strings.Builder
	// No upstreams: the four defaults, plus the one the changes add.
	fmt.Fprintf(&cfg, "adminTokens: [%q]\nnamespaces:\n", adminToken)
	for i := range names {
		names[i] = fmt.Sprintf("ns-%05d", i)
		tokens[names[i]] = fmt.Sprintf("edge-%d-%s", i, randomHex(t))
		fmt.Fprintf(&cfg, "  %s: {edgeToken: %q}\n", names[i], tokens[names[i]])
	}
	cp := harness.StartControlPlane(t, cfg.String(), "--debounce", s.debounce)
	pid := cp.Pid()

	conn, err := grpc.NewClient(cp.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20))) // ListEdges of 5 000 edges
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	admin := selfhostv1.NewAdminServiceClient(conn)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+adminToken)

	time.Sleep(time.Second) // let the start-up garbage be collected
	rss0, err := harness.MemStatus(pid, "VmRSS")
	if err != nil {
		t.Fatal(err)
	}
	connectStart := time.Now()
	f, err := startFleet(cp.Addr, n, names, tokens, 5*time.Minute)
	if err != nil {
		t.Fatalf("connect %d edges: %v", n, err)
	}
	defer f.close()
	t.Logf("%d edges connected and ACKed their first snapshot in %v", n, time.Since(connectStart).Round(time.Millisecond))
	time.Sleep(2 * time.Second) // settle: the control plane's GC catches up
	rssN, err := harness.MemStatus(pid, "VmRSS")
	if err != nil {
		t.Fatal(err)
	}
	r.perEdge = float64(rssN-rss0) / float64(n)
	t.Logf("control-plane RSS %d KiB with 0 edges, %d KiB with %d", rss0>>10, rssN>>10, n)

	change := func(i int) (fromBefore, fromReturn time.Duration, cpu time.Duration) {
		t.Helper()
		rd := f.begin()
		cpu0, err := cpuTime(pid)
		if err != nil {
			t.Fatal(err)
		}
		before := time.Now()
		_, err = admin.PutUpstream(ctx, &selfhostv1.PutUpstreamRequest{Upstream: &selfhostv1.Upstream{
			Prefix: "bench", Url: fmt.Sprintf("http://127.0.0.1:%d", 1+i%2)}})
		returned := time.Now()
		if err != nil {
			t.Fatalf("PutUpstream: %v", err)
		}
		if err := rd.wait(2 * time.Minute); err != nil {
			t.Fatalf("change %d: %v", i, err)
		}
		cpu1, err := cpuTime(pid)
		if err != nil {
			t.Fatal(err)
		}
		return rd.lastAck().Sub(before), rd.lastAck().Sub(returned), cpu1 - cpu0
	}
	change(0) // warm-up: adds the upstream
	r.listedAcked = n
	var cpu time.Duration
	for i := 1; i <= s.reps; i++ {
		b, a, c := change(i)
		r.fromBefore, r.fromReturn = append(r.fromBefore, b), append(r.fromReturn, a)
		cpu += c
		// Outside the timed and CPU windows: the control plane's own view.
		r.listedAcked = min(r.listedAcked, listedAcked(t, ctx, admin, f))
	}
	r.cpuPerPush = cpu / time.Duration(s.reps)
	r.streamErrors = f.streamE.Load()
	t.Logf("last ACK after the call returned: %v", r.fromReturn)
	return r
}

// listedAcked polls ListEdges until every edge shows, as acked_version, the
// version it ACKed itself (or 10 s pass: the ACKs are recorded
// asynchronously), and returns how many did.
func listedAcked(t *testing.T, ctx context.Context, admin selfhostv1.AdminServiceClient, f *fleet) int {
	t.Helper()
	want := map[string]string{}
	for i, pod := range f.pods {
		want[pod] = f.ackedVersion(i)
	}
	match := 0
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := admin.ListEdges(ctx, &selfhostv1.ListEdgesRequest{})
		if err != nil {
			t.Fatalf("ListEdges: %v", err)
		}
		match = 0
		for _, e := range resp.GetEdges() {
			if v, ok := want[e.GetPod()]; ok && v != "" && e.GetAckedVersion() == v {
				match++
			}
		}
		if match == len(f.pods) || time.Now().After(deadline) {
			return match
		}
	}
}

// percentile is the nearest-rank percentile p (0–100) of d; with 10
// samples p99 is the largest.
func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	k := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(k, len(s)-1))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func render(header []string, rows []row, reps int) string {
	var b strings.Builder
	for _, h := range header {
		fmt.Fprintf(&b, "%s\n", h)
	}
	fmt.Fprintf(&b, "\n| edges | namespaces | last ACK p50 | p99 | p50 from before the call | p99 | ListEdges acked | memory per edge | CPU per push | CPU per push per edge | target | met? |\n")
	fmt.Fprintf(&b, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n")
	for _, r := range rows {
		p99 := percentile(r.fromReturn, 99)
		target := "< 64 KiB per edge"
		met := r.perEdge < targetPerEdge
		if r.n == targetEdges {
			target = "all ACKed < 1 s (p99); " + target
			met = met && p99 < targetLastAck
		}
		verdict := "yes"
		if !met {
			verdict = "no"
		}
		if r.streamErrors > 0 {
			verdict += fmt.Sprintf(" (%d streams broke)", r.streamErrors)
		}
		fmt.Fprintf(&b, "| %d | %d | %s | %s | %s | %s | %d/%d | %.1f KiB | %s | %.1f µs | %s | %s |\n",
			r.n, r.namespaces, ms(percentile(r.fromReturn, 50)), ms(p99),
			ms(percentile(r.fromBefore, 50)), ms(percentile(r.fromBefore, 99)),
			r.listedAcked, r.n, r.perEdge/1024, ms(r.cpuPerPush),
			float64(r.cpuPerPush.Nanoseconds())/1000/float64(r.n), target, verdict)
	}
	fmt.Fprintf(&b, "\nlast ACK: from PutUpstream's return (or from just before the call) until the last edge sent its ACK, over %d changes (nearest rank; with 10 samples p99 is the maximum); it includes the --debounce wait.\n", reps)
	b.WriteString("ListEdges acked: the fewest edges, over the changes, whose acked_version in ListEdges equals what they ACKed.\n")
	b.WriteString("memory per edge: (control-plane VmRSS with N edges connected - VmRSS with none) / N. CPU per push: control-plane utime+stime from the call to the last ACK, per change.\n")
	b.WriteString("The edges share the machine's cores with the control plane. Targets are informational; nothing fails on time.\n")
	return b.String()
}

func randomHex(t *testing.T) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
