package harness

// Network namespaces made by a test (only loopback and the test's own
// namespaces carry test traffic). A Netns is joined to the root namespace
// by a veth pair with a private /30 and nothing else: no forwarding rule,
// and no default route unless NetnsOptions.DefaultRoute asks for one. A
// process inside reaches the root side's address only; the root namespace
// reaches the inside address only.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

const hintNetns = "network namespace tests run as root with iproute2 and util-linux (ip, nsenter): apt-get install -y iproute2 util-linux"

// Netns is a network namespace joined to the root namespace by a veth pair.
type Netns struct {
	// Name is the `ip netns` name.
	Name string
	// HostAddr is the root-namespace end of the veth pair (e.g. 10.213.4.1);
	// servers in the root namespace bind it to be reachable from inside.
	HostAddr string
	// NSAddr is the namespace end (e.g. 10.213.4.2); servers inside bind it
	// to be reachable from the root namespace.
	NSAddr string

	hostLink string
	ports    atomic.Int32
}

// Port returns a TCP port not yet handed out for this namespace. The
// namespace is the test's own, so nothing else binds its addresses; the
// ports start above the ephemeral range's usual floor of other tools.
func (n *Netns) Port() int { return 20000 + int(n.ports.Add(1)) }

// netnsSeq numbers the namespaces of this test binary.
var netnsSeq atomic.Int32

// NetnsOptions configures NewNetnsWith.
type NetnsOptions struct {
	// DefaultRoute adds a default route via the root side's address. A
	// Kubernetes node needs one: kube-proxy's DNAT of a ClusterIP runs
	// after the routing decision, so a locally sent packet to 10.96.0.1
	// must first find a route. The root namespace forwards nothing, so
	// traffic to other addresses still goes nowhere.
	DefaultRoute bool
}

// NewNetns creates a namespace with loopback up and a veth pair to the
// root namespace on a /30 of 10.0.0.0/8 not in use on this machine. It is
// deleted (with its veth pair) when the test ends, whatever the outcome;
// processes started inside with Wrap must be stopped first, which
// t.Cleanup's last-in-first-out order does for processes started later.
func NewNetns(t testing.TB) *Netns {
	t.Helper()
	return NewNetnsWith(t, NetnsOptions{})
}

// NewNetnsWith is NewNetns configured by opts.
func NewNetnsWith(t testing.TB, opts NetnsOptions) *Netns {
	t.Helper()
	ipBin := Binary(t, "ip", "", hintNetns)
	Binary(t, "nsenter", "", hintNetns)
	if os.Geteuid() != 0 {
		t.Fatalf("network namespaces need root; %s", hintNetns)
	}
	ip := func(args ...string) error {
		out, err := exec.Command(ipBin, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	// Names and subnets from the pid and a counter: unique among
	// concurrent test binaries too, and checked against what exists.
	pid := os.Getpid()
	for attempt := 0; attempt < 50; attempt++ {
		seq := int(netnsSeq.Add(1))
		tag := fmt.Sprintf("%d%d", pid%100000, seq)
		n := &Netns{Name: "shtest" + tag, hostLink: "sh" + tag + "h"}
		nsLink := "sh" + tag + "n"
		if len(n.hostLink) > 15 {
			t.Fatalf("veth name %q too long", n.hostLink)
		}
		// 10.(200+pid%50).(seq/64).(seq%64*4)/30
		b2, b3, b4 := 200+pid%50, (seq/64)%256, (seq%64)*4
		n.HostAddr = fmt.Sprintf("10.%d.%d.%d", b2, b3, b4+1)
		n.NSAddr = fmt.Sprintf("10.%d.%d.%d", b2, b3, b4+2)
		if addrInUse(n.HostAddr) || addrInUse(n.NSAddr) {
			continue
		}
		if err := ip("netns", "add", n.Name); err != nil {
			if strings.Contains(err.Error(), "exists") {
				continue
			}
			t.Fatalf("create network namespace: %v; %s", err, hintNetns)
		}
		t.Cleanup(func() {
			_ = ip("link", "del", n.hostLink) // gone with the namespace, normally
			if err := ip("netns", "del", n.Name); err != nil {
				t.Errorf("delete network namespace: %v", err)
			}
		})
		steps := [][]string{
			{"link", "add", n.hostLink, "type", "veth", "peer", "name", nsLink},
			{"link", "set", nsLink, "netns", n.Name},
			{"addr", "add", n.HostAddr + "/30", "dev", n.hostLink},
			{"link", "set", n.hostLink, "up"},
			{"-n", n.Name, "addr", "add", n.NSAddr + "/30", "dev", nsLink},
			{"-n", n.Name, "link", "set", nsLink, "up"},
			{"-n", n.Name, "link", "set", "lo", "up"},
		}
		if opts.DefaultRoute {
			steps = append(steps, []string{"-n", n.Name, "route", "add", "default", "via", n.HostAddr})
		}
		for _, s := range steps {
			if err := ip(s...); err != nil {
				t.Fatalf("set up network namespace %s: %v", n.Name, err)
			}
		}
		return n
	}
	t.Fatal("no free name or subnet for a network namespace")
	return nil
}

// addrInUse reports whether an interface of the root namespace has ip.
func addrInUse(ip string) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if pfx, ok := a.(*net.IPNet); ok && pfx.IP.String() == ip {
			return true
		}
	}
	return false
}

// Wrap is the command prefix that runs a program inside the namespace
// (only the network namespace changes: mounts and files stay shared).
func (n *Netns) Wrap() []string {
	return []string{"nsenter", "--net=" + filepath.Join("/run/netns", n.Name)}
}

// Command returns a command that runs inside the namespace.
func (n *Netns) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	w := n.Wrap()
	return exec.CommandContext(ctx, w[0], append(append(w[1:], name), args...)...)
}

// StartDockerRegistryIn starts a docker-registry inside ns, bound to
// ns.NSAddr: reachable from the root namespace (and from the proxy servers
// there), not from any other namespace.
func StartDockerRegistryIn(t testing.TB, ns *Netns) *Registry {
	t.Helper()
	bin := dockerRegistryBin(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "storage")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatalf("create registry storage: %v", err)
	}
	port := ns.Port()
	cfg := strings.Replace(registryConfig(root, port, ""), "addr: 127.0.0.1:", "addr: "+ns.NSAddr+":", 1)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatalf("write registry config: %v", err)
	}
	w := ns.Wrap()
	p, err := startProcess("docker-registry-netns", w[0], append(w[1:], bin, "serve", cfgPath), nil, dir)
	if err != nil {
		t.Fatalf("start docker-registry in %s: %v", ns.Name, err)
	}
	addr := net.JoinHostPort(ns.NSAddr, strconv.Itoa(port))
	if err := waitReady(p, func(ctx context.Context) error { return httpStatus(ctx, "http://"+addr+"/v2/", http.StatusOK) }); err != nil {
		p.Stop()
		t.Fatalf("start docker-registry in %s: %v", ns.Name, err)
	}
	reg := &Registry{Addr: addr, URL: "http://" + addr, Root: root, Proc: p}
	cleanupProcess(t, reg.Proc)
	return reg
}

// StartEdgeIn starts the edge binary inside ns, listening on ns.NSAddr
// (registry API and metrics on ports from ns.Port): the test, in the root
// namespace, pulls from Edge.Addr; the edge itself reaches only ns.HostAddr.
func StartEdgeIn(t testing.TB, ns *Netns, opts EdgeOptions) *Edge {
	t.Helper()
	e := &Edge{dir: t.TempDir(), env: opts.Env}
	args := append([]string(nil), opts.Args...)
	if v, ok := flagValue(args, "--storage"); ok {
		e.Storage = v
	} else {
		e.Storage = filepath.Join(e.dir, "store")
		args = append(args, "--storage", e.Storage)
	}
	e.Addr = net.JoinHostPort(ns.NSAddr, strconv.Itoa(ns.Port()))
	e.metricsAddr = net.JoinHostPort(ns.NSAddr, strconv.Itoa(ns.Port()))
	w := ns.Wrap()
	e.bin = w[0]
	e.args = append(append(w[1:], EdgeBinary(t), "--listen", e.Addr, "--metrics-listen", e.metricsAddr), args...)
	if err := e.start(); err != nil {
		t.Fatalf("start edge in %s: %v", ns.Name, err)
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
