//go:build bench

package proxy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/test/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// target is the edge's throughput relative to the proxy's own client.
const target = 0.9

// nodeCase is one row: how to start the proxy server and how curl uses it
// directly (through the server's own client where it has one).
type nodeCase struct {
	name   string
	start  func(testing.TB, harness.ProxyOptions) *harness.ProxyServer
	native bool // the server has its own client (ss-local, trojan, v2ray)
	curl   func(ps *harness.ProxyServer, local string) []string
}

func socksVia(_ *harness.ProxyServer, local string) []string {
	return []string{"--socks5-hostname", local}
}

var cases = []nodeCase{
	{"direct (no proxy)", nil, false, nil},
	{"ss aes-256-gcm", harness.StartShadowsocks, true, socksVia},
	{"ss chacha20-ietf-poly1305", func(t testing.TB, o harness.ProxyOptions) *harness.ProxyServer {
		o.Cipher = "chacha20-ietf-poly1305"
		return harness.StartShadowsocks(t, o)
	}, true, socksVia},
	{"socks5 microsocks", harness.StartMicrosocks, false, func(ps *harness.ProxyServer, _ string) []string {
		return []string{"--socks5-hostname", ps.Addr}
	}},
	{"http tinyproxy (CONNECT)", harness.StartTinyproxy, false, func(ps *harness.ProxyServer, _ string) []string {
		return []string{"--proxytunnel", "-x", "http://" + ps.Addr}
	}},
	{"trojan", harness.StartTrojan, true, socksVia},
	{"vmess v2ray", harness.StartV2RayVmess, true, socksVia},
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestProxyBenchTable measures every row and prints the table.
func TestProxyBenchTable(t *testing.T) {
	mib := envInt("BENCH_PROXY_MIB", 512)
	reps := envInt("BENCH_PROXY_REPS", 3)
	curlBin := harness.Binary(t, "curl", "CURL", "apt-get install -y curl")
	reg := harness.StartDockerRegistry(t)
	t.Logf("pushing a %d MiB layer", mib)
	im := harness.PushBigImage(t, reg.Addr, "bench/big", "v1", int64(mib)<<20)
	layer := im.Layers[0]
	blobPath := "/v2/bench/big/blobs/" + layer

	loadBefore := loadAvg()
	var rows []string
	for _, c := range cases {
		var ps *harness.ProxyServer
		var direct []string // curl arguments of the baseline
		edgeArgs := []string{"--upstream", "bench=" + reg.URL}
		if c.start != nil {
			ps = c.start(t, harness.ProxyOptions{Name: strings.Fields(c.name)[0]})
			local := ""
			if c.native {
				local = harness.StartNativeClient(t, ps)
			}
			direct = c.curl(ps, local)
			edgeArgs = append(edgeArgs, "--proxy", ps.Link)
		}
		var base, edge []float64
		for i := range reps {
			b, err := curlRate(curlBin, append(direct, reg.URL+blobPath))
			if err != nil {
				t.Fatalf("%s: direct client, rep %d: %v", c.name, i, err)
			}
			e, err := edgeRate(t, curlBin, edgeArgs, strings.Replace(blobPath, "/v2/", "/v2/bench/", 1))
			if err != nil {
				t.Fatalf("%s: edge, rep %d: %v", c.name, i, err)
			}
			base, edge = append(base, b), append(edge, e)
			t.Logf("%s rep %d: client %.0f MB/s, edge %.0f MB/s", c.name, i+1, b/1e6, e/1e6)
		}
		mb, me := median(base), median(edge)
		ratio := me / mb
		met := "yes"
		if ratio < target {
			met = "no"
		}
		rows = append(rows, fmt.Sprintf("| %s | %.0f | %.0f | %.2f | %s |", c.name, mb/1e6, me/1e6, ratio, met))
		if ps != nil {
			ps.Kill()
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Cold pull of one %d MiB blob over 127.0.0.1, median of %d; %d CPUs (%s), %s; load average %s before, %s after.\n",
		mib, reps, runtime.NumCPU(), cpuModel(), time.Now().UTC().Format("2006-01-02"), loadBefore, loadAvg())
	b.WriteString("Client: curl through the proxy's own client (ss-local, trojan client, v2ray socks inbound) or curl's SOCKS5 / HTTP CONNECT.\n")
	b.WriteString("Edge: curl → edge (mihomo dialer, digest check, write to its filesystem store) → proxy server → docker-registry.\n\n")
	fmt.Fprintf(&b, "| node type | proxy's own client MB/s | edge MB/s | ratio edge/client | ≥ %.1f? |\n|---|---|---|---|---|\n", target)
	b.WriteString(strings.Join(rows, "\n") + "\n")
	fmt.Print("\n" + b.String())
	if out := os.Getenv("BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
			t.Errorf("write %s: %v", out, err)
		}
	}
}

// edgeRate starts an edge with empty storage, pulls path through it once
// (cold) and removes the storage.
func edgeRate(t *testing.T, curlBin string, args []string, path string) (float64, error) {
	dir, err := os.MkdirTemp("", "benchproxy-edge-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	e := harness.StartEdge(t, append(append([]string(nil), args...), "--storage", filepath.Join(dir, "store"))...)
	defer e.Stop()
	return curlRate(curlBin, []string{e.URL + path})
}

// curlRate downloads with curl to /dev/null and returns bytes per second.
func curlRate(curlBin string, args []string) (float64, error) {
	cmd := exec.Command(curlBin, append([]string{"-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download} %{time_total}"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("curl %v: %w: %s", args, err, out)
	}
	f := strings.Fields(string(out))
	if len(f) != 2 {
		return 0, fmt.Errorf("curl output %q", out)
	}
	size, _ := strconv.ParseFloat(f[0], 64)
	secs, _ := strconv.ParseFloat(f[1], 64)
	if size == 0 || secs == 0 {
		return 0, fmt.Errorf("curl: %s", out)
	}
	return size / secs, nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// loadAvg is the 1-minute load average: other work on the machine skews
// every number of the table, so the table says how busy it was.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "unknown"
}
