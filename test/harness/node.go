package harness

// A real single-node Kubernetes cluster for end-to-end tests in which pods
// run under a real kubelet. Every component runs as a process of the test
// inside a network namespace of its own (the "node"), started through
// nsenter so that mounts and files stay shared with the test.

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

const hintNode = "run test/all.sh once: it installs containerd, runc, containernetworking-plugins, iptables, conntrack, busybox-static and builds kubelet, kube-proxy, kube-controller-manager, kube-scheduler and coredns into bin/tools"

// ClusterOptions configures StartCluster.
type ClusterOptions struct {
	// ProxyMode is kube-proxy's mode: "iptables" (the default) forwards
	// NodePorts on 127.0.0.1; "nftables" (its loopback gate off) and
	// "ipvs" do not, so StartCluster then checks the NodePort on the
	// node's address instead.
	ProxyMode string
}

// Cluster is a running single-node cluster. The embedded Kube is its
// apiserver at https://<NodeIP>:6443 (reachable from the test's root
// namespace), with an admin Client, Config and Kubeconfig and every Kube
// helper (ApplyFile, ServiceAccountToken, ClientFor, ...).
type Cluster struct {
	*Kube
	// Netns is the node's network namespace: Netns.Command and
	// Cluster.StartProcess run more servers on the node.
	Netns *Netns
	// NodeIP is the node's address: the root namespace reaches the
	// apiserver, the registry and NodePorts on it; pods reach it too.
	NodeIP string
	// Containerd is the node's container runtime (crictl and ctr work on
	// it; its CRI namespace is k8s.io).
	Containerd *Containerd
	// RegistryAddr is the node's docker-registry as the test (root
	// namespace) and pods reach it: <NodeIP>:5000, plain HTTP. Push here.
	RegistryAddr string
	// RegistryNodeAddr is the same registry as kubelet reaches it:
	// 127.0.0.1:5000, which containerd pulls over plain HTTP with no
	// configuration. Image references in pod specs use this.
	RegistryNodeAddr string
	// RegistryNodePort is the NodePort of Service kube-system/
	// harness-registry in front of the same registry (RegistryViaNodePort).
	RegistryNodePort int
	// Dir holds every component's configuration, state and log.
	Dir string
	// ProxyMode is kube-proxy's mode (ClusterOptions.ProxyMode).
	ProxyMode string

	ctr, snapshotter string
	hostBefore       HostState // taken under the lock, restored at the end
	mu               sync.Mutex
	procs            []*Process // node processes: one that exits fails the start
}

// clusterBins are the programs a cluster runs, found before anything
// starts so that a missing one fails fast with the install hint.
type clusterBins struct {
	kubelet, controllerManager, scheduler, proxy, coredns, registry string
}

func findClusterBins(t testing.TB) clusterBins {
	t.Helper()
	path := strings.TrimPrefix(nodeEnv()[0], "PATH=")
	for _, b := range []string{"iptables", "conntrack", "runc", "nsenter", "ldd", "mount"} {
		found := false
		for _, d := range filepath.SplitList(path) {
			if st, err := os.Stat(filepath.Join(d, b)); err == nil && !st.IsDir() {
				found = true
				break
			}
		}
		if !found {
			t.Fatalf("cluster: %s not found in %s; %s", b, path, hintNode)
		}
	}
	if _, err := os.Stat(filepath.Join(cniBinDir, "bridge")); err != nil {
		t.Fatalf("CNI plugins: %v; %s", err, hintNode)
	}
	return clusterBins{
		kubelet:           Binary(t, "kubelet", "KUBELET", hintNode),
		controllerManager: Binary(t, "kube-controller-manager", "KUBE_CONTROLLER_MANAGER", hintNode),
		scheduler:         Binary(t, "kube-scheduler", "KUBE_SCHEDULER", hintNode),
		proxy:             Binary(t, "kube-proxy", "KUBE_PROXY", hintNode),
		coredns:           Binary(t, "coredns", "COREDNS", hintNode),
		registry:          dockerRegistryBin(t),
	}
}

// nodeEnv is the node components' PATH: the test's, then the sbin
// directories where Debian installs runc, iptables and the mount tools
// (not on every root PATH).
func nodeEnv() []string {
	return []string{"PATH=" + os.Getenv("PATH") + ":/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin"}
}

// cniBinDir is where Debian's containernetworking-plugins installs.
const cniBinDir = "/usr/lib/cni"

// StartCluster starts a single-node cluster and waits until it is usable:
// apiserver ready, node Ready, the default ServiceAccount in "default",
// kube-proxy forwarding a NodePort on 127.0.0.1, DNS answering. It holds
// a machine-wide lock (ClusterLockPath) while the cluster runs, because
// kubelet and containerd use a few fixed paths and global sysctls; all of
// them are restored by t.Cleanup, whatever the outcome, and every process,
// mount and cgroup of the cluster is gone afterwards.
func StartCluster(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	if opts.ProxyMode == "" {
		opts.ProxyMode = "iptables"
	}
	bins := findClusterBins(t)
	takeClusterLock(t)
	start := time.Now()
	hostBefore := restoreHost(t)

	ns := NewNetnsWith(t, NetnsOptions{DefaultRoute: true})
	for _, cidr := range []string{PodCIDR, ServiceCIDR} {
		if _, n, _ := net.ParseCIDR(cidr); n.Contains(net.ParseIP(ns.NSAddr)) || n.Contains(net.ParseIP(ns.HostAddr)) {
			t.Fatalf("cluster: node address %s or %s is inside %s", ns.NSAddr, ns.HostAddr, cidr)
		}
	}
	kube := startKube(t, kubeSetup{
		wrap: ns.Wrap(), host: ns.NSAddr, bind: "0.0.0.0", endpointReconciler: "lease",
		port: apiserverPort, etcdPort: etcdPort, etcdPeer: etcdPeerPort,
		extraArgs: []string{"--kubelet-preferred-address-types=InternalIP"},
		pki: pkiOptions{kubeletClient: true, users: []tokenUser{
			{name: "system:node:" + ClusterNodeName, groups: "system:nodes"},
			{name: "system:kube-controller-manager"},
			{name: "system:kube-scheduler"},
			{name: "system:kube-proxy"},
		}},
	})
	c := &Cluster{
		Kube: kube, Netns: ns, NodeIP: ns.NSAddr, Dir: kube.Dir,
		RegistryAddr:     net.JoinHostPort(ns.NSAddr, strconv.Itoa(RegistryPort)),
		RegistryNodeAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(RegistryPort)),
		ctr:              ctrBin(t), snapshotter: "native", hostBefore: hostBefore,
		ProxyMode: opts.ProxyMode,
	}
	c.procs = append(c.procs, kube.Etcd)
	c.startNode(t, bins, opts)
	t.Logf("cluster: ready in %v (node %s, apiserver %s, registry %s / %s)",
		time.Since(start).Round(10*time.Millisecond), c.NodeIP, c.URL, c.RegistryAddr, c.RegistryNodeAddr)
	return c
}

// restoreHost records the host state and registers its restoration; it
// runs after every other cleanup of the cluster (registered earlier).
func restoreHost(t testing.TB) HostState {
	t.Helper()
	before, err := CaptureHostState()
	if err != nil {
		t.Fatalf("cluster: %v", err)
	}
	if pids := cgroupProcs(); len(pids) > 0 {
		t.Logf("cluster: processes left in cgroup %s by an earlier run: %v; killing them", clusterCgroup, pids)
	}
	if err := removeClusterCgroup(); err != nil {
		t.Fatalf("cluster: clean an earlier run's cgroups: %v", err)
	}
	t.Cleanup(func() {
		if err := removeClusterCgroup(); err != nil {
			t.Errorf("cluster cleanup: %v", err)
		}
		for _, err := range before.restore() {
			t.Errorf("cluster cleanup: %v", err)
		}
	})
	if err := makeClusterCgroup(); err != nil {
		t.Fatalf("cluster: %v", err)
	}
	return before
}

// startNode starts containerd, the registry, the controllers, kubelet,
// kube-proxy and CoreDNS, and waits for readiness.
func (c *Cluster) startNode(t testing.TB, bins clusterBins, opts ClusterOptions) {
	t.Helper()
	dir := c.Dir
	for _, d := range []string{"cni-conf", "cni-ipam", "pod-logs", "kubelet"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatalf("cluster: %v", err)
		}
	}
	files := map[string]string{
		"cni-conf/10-selfhost.conflist": cniConfig(filepath.Join(dir, "cni-ipam")),
		"resolv.conf":                   "nameserver " + c.NodeIP + "\n",
		"corefile":                      corefile(filepath.Join(dir, "coredns.kubeconfig")),
		"kube-proxy.yaml":               kubeProxyConfig(filepath.Join(dir, "kube-proxy.kubeconfig"), opts.ProxyMode),
	}
	kubeconfigs := map[string]string{
		"kubelet.kubeconfig":            c.pki.tokens["system:node:"+ClusterNodeName],
		"controller-manager.kubeconfig": c.pki.tokens["system:kube-controller-manager"],
		"scheduler.kubeconfig":          c.pki.tokens["system:kube-scheduler"],
		"kube-proxy.kubeconfig":         c.pki.tokens["system:kube-proxy"],
		// CoreDNS reads Services, EndpointSlices and Namespaces; the admin
		// token saves a ClusterRole that would only repeat upstream's.
		"coredns.kubeconfig": c.pki.adminToken,
	}
	for name, tok := range kubeconfigs {
		cfg := rest.CopyConfig(c.Config)
		cfg.BearerToken = tok
		if err := writeKubeconfig(filepath.Join(dir, name), cfg); err != nil {
			t.Fatalf("cluster: %v", err)
		}
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatalf("cluster: %v", err)
		}
	}

	f := func(name string) string { return filepath.Join(dir, name) }
	// Everything that does not need containerd first: the
	// controller-manager's ServiceAccounts and root CA ConfigMap take the
	// longest, so they start while containerd and the pause image are
	// prepared.
	c.StartProcess(t, "kube-controller-manager", bins.controllerManager,
		"--kubeconfig="+f("controller-manager.kubeconfig"),
		"--use-service-account-credentials",
		"--service-account-private-key-file="+f("sa.key"),
		"--root-ca-file="+f("ca.crt"),
		"--cluster-cidr="+PodCIDR,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--v=1")
	c.StartProcess(t, "kube-scheduler", bins.scheduler,
		"--kubeconfig="+f("scheduler.kubeconfig"),
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--v=1")
	c.StartProcess(t, "kube-proxy", bins.proxy, "--config="+f("kube-proxy.yaml"), "--v=1")
	c.StartProcess(t, "coredns", bins.coredns, "-conf", f("corefile"))
	c.Containerd = StartContainerdWith(t, ContainerdOptions{
		Netns: c.Netns, CNIBinDir: cniBinDir, CNIConfDir: filepath.Join(dir, "cni-conf"),
		SandboxImage: PauseImageRef, Snapshotter: c.snapshotter, Env: nodeEnv(),
	})
	c.procs = append(c.procs, c.Containerd.Proc)
	c.ImportImage(t, PauseImageRef, pauseImage(t))
	// Cleanups run last in, first out: after kubelet stopped (it starts
	// later) every pod is removed through the CRI, then whatever is still
	// mounted is detached (kubelet's volume tmpfs and the bind mount of its
	// root directory on itself, containerd's rootfs and shm mounts), and
	// only then containerd stops. No pod may outlive the test.
	kubeletRoot := filepath.Join(dir, "kubelet")
	t.Cleanup(func() {
		for _, d := range []string{kubeletRoot, c.Containerd.Root, c.Containerd.State} {
			if left := unmountUnder(d); len(left) > 0 {
				t.Errorf("cluster cleanup: mounts left under %s: %v", d, left)
			}
		}
	})
	t.Cleanup(func() { c.teardownPods(t) })

	c.startRegistry(t, bins.registry)
	if err := os.WriteFile(f("kubelet.yaml"), []byte(kubeletConfig(dir, c.Containerd.Socket, c.NodeIP)), 0o644); err != nil {
		t.Fatalf("cluster: %v", err)
	}
	c.StartProcess(t, "kubelet", bins.kubelet,
		"--config="+f("kubelet.yaml"),
		"--kubeconfig="+f("kubelet.kubeconfig"),
		"--root-dir="+kubeletRoot,
		"--hostname-override="+ClusterNodeName,
		"--node-ip="+c.NodeIP,
		"--v=1")
	c.waitReady(t)
}

// StartProcess runs bin with args on the node (inside its network
// namespace), logging to Dir/<name>.log, and stops it when the test ends
// (before the cluster, which started earlier). Its log tail is shown when
// the test failed.
func (c *Cluster) StartProcess(t testing.TB, name, bin string, args ...string) *Process {
	t.Helper()
	p, err := startProcessIn(c.Netns.Wrap(), name, bin, args, nodeEnv(), c.Dir)
	if err != nil {
		t.Fatalf("cluster: %v", err)
	}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	cleanupProcess(t, p) // stops it and shows its log tail when the test failed
	return p
}

// startRegistry runs docker-registry on every address of the node.
func (c *Cluster) startRegistry(t testing.TB, bin string) {
	t.Helper()
	root := filepath.Join(c.Dir, "registry")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatalf("cluster: %v", err)
	}
	cfg := registryConfig(root, RegistryPort, "")
	cfg = strings.Replace(cfg, "addr: 127.0.0.1:", "addr: 0.0.0.0:", 1)
	path := filepath.Join(c.Dir, "registry.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatalf("cluster: %v", err)
	}
	p := c.StartProcess(t, "docker-registry", bin, "serve", path)
	if err := waitReady(p, func(ctx context.Context) error {
		return httpStatus(ctx, "http://"+c.RegistryAddr+"/v2/", 200)
	}); err != nil {
		t.Fatalf("cluster: %v", err)
	}
}

// teardownPods removes every pod sandbox through the CRI (stopping its
// containers, releasing its IP and network namespace), then kills any
// shim of this containerd that is left.
func (c *Cluster) teardownPods(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := c.Containerd.Crictl(t, "rmp", "-a", "-f"); err != nil && ctx.Err() == nil {
		t.Logf("cluster cleanup: crictl rmp -a -f: %v\n%s", err, out)
	}
	if err := killProcsWithArg(c.Containerd.Socket); err != nil {
		t.Errorf("cluster cleanup: %v", err)
	}
}
