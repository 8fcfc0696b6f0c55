package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// Containerd is a private containerd daemon (Debian's 1.6) with its own
// root, state and socket, and the CRI plugin that kubelet talks to.
type Containerd struct {
	// Socket is the gRPC socket (unix path).
	Socket string
	// Root and State are the daemon's directories.
	Root, State string
	// Proc is the daemon process.
	Proc *Process

	crictlConfig string
}

// ContainerdOptions configures StartContainerdWith.
type ContainerdOptions struct {
	// Mirrors maps a registry host ("127.0.0.1:5000") to a mirror URL
	// ("http://127.0.0.1:6000"), written as certs.d/<host>/hosts.toml. The
	// CRI then pulls through the mirror and adds ?ns=<host> to each request.
	// Empty means containerd's default registry configuration, which is
	// what a node without any configuration has.
	Mirrors map[string]string
	// Netns runs the daemon (and so every pod's CNI set-up) inside this
	// namespace; nil is the root namespace.
	Netns *Netns
	// CNIBinDir and CNIConfDir replace the empty CNI directories of a
	// daemon that never runs a pod (a node: /usr/lib/cni and its conflist).
	CNIBinDir, CNIConfDir string
	// SandboxImage is the CRI's pause image; empty keeps containerd's
	// default (which cannot be pulled here).
	SandboxImage string
	// Snapshotter is the CRI's snapshotter; empty is "native", which
	// works on any filesystem.
	Snapshotter string
	// Env is added to the daemon's environment (a node's PATH must find
	// runc and iptables).
	Env []string
}

// CtrNamespace is the containerd namespace of CtrPull: separate from the
// CRI's k8s.io so that ctr and crictl pulls of one reference do not see
// each other's images.
const CtrNamespace = "harness"

// StartContainerd starts containerd with the default registry configuration.
func StartContainerd(t testing.TB) *Containerd {
	t.Helper()
	return StartContainerdWith(t, ContainerdOptions{})
}

// containerdConfig is a version 2 config. restrict_oom_score_adj is needed on
// machines without CAP_SYS_RESOURCE; the native snapshotter works in any
// temporary directory, overlayfs does not (e.g. on overlay or tmpfs); every
// path that defaults to a fixed system location (root, state, socket, opt,
// CNI, temp mounts) is moved into the test's directories so that parallel
// daemons and the host's own containerd never meet. The paths that stay fixed
// in 1.6 (shim sockets under /run/containerd/s, the netns mounts) are only
// used to run containers, which only the test cluster does (StartCluster: one
// at a time, and it cleans them); a pull leaves nothing outside the test's
// directories. Plugins that cannot work here are disabled to keep the log
// readable.
func containerdConfig(dir, sock, certsDir string, opts ContainerdOptions) string {
	registry := ""
	if certsDir != "" {
		registry = fmt.Sprintf("    [plugins.\"io.containerd.grpc.v1.cri\".registry]\n      config_path = %q\n", certsDir)
	}
	cniBin, cniConf := filepath.Join(dir, "cni", "bin"), filepath.Join(dir, "cni", "conf")
	if opts.CNIBinDir != "" {
		cniBin = opts.CNIBinDir
	}
	if opts.CNIConfDir != "" {
		cniConf = opts.CNIConfDir
	}
	snapshotter := "native"
	if opts.Snapshotter != "" {
		snapshotter = opts.Snapshotter
	}
	sandbox := ""
	if opts.SandboxImage != "" {
		sandbox = fmt.Sprintf("    sandbox_image = %q\n", opts.SandboxImage)
	}
	return fmt.Sprintf(`version = 2
root = %q
state = %q
temp = %q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = %q

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %q
  [plugins."io.containerd.grpc.v1.cri"]
    restrict_oom_score_adj = true
    disable_tcp_service = true
%s    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = %q
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = %q
      conf_dir = %q
%s`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), filepath.Join(dir, "tmp"), sock,
		filepath.Join(dir, "opt"), sandbox, snapshotter, cniBin, cniConf, registry)
}

// StartContainerdWith starts containerd configured by opts and waits until
// its CRI image service answers.
func StartContainerdWith(t testing.TB, opts ContainerdOptions) *Containerd {
	t.Helper()
	bin := containerdBin(t)
	crictlBin(t) // fail early, before the daemon starts, when crictl is missing
	dir := t.TempDir()
	// A unix socket path must fit in 108 bytes, and t.TempDir() contains the
	// (sub)test name, so the socket lives in a short directory of its own.
	sockDir, err := os.MkdirTemp("", "ctrd-")
	if err != nil {
		t.Fatalf("socket dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	c := &Containerd{
		Socket: filepath.Join(sockDir, "containerd.sock"),
		Root:   filepath.Join(dir, "root"),
		State:  filepath.Join(dir, "state"),
	}
	for _, d := range []string{"tmp", "opt", "cni/bin", "cni/conf"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatalf("containerd dirs: %v", err)
		}
	}
	certsDir := ""
	if len(opts.Mirrors) > 0 {
		certsDir = filepath.Join(dir, "certs.d")
		writeMirrors(t, certsDir, opts.Mirrors)
	}
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(containerdConfig(dir, c.Socket, certsDir, opts)), 0o644); err != nil {
		t.Fatalf("write containerd config: %v", err)
	}
	c.crictlConfig = filepath.Join(dir, "crictl.yaml")
	crictlCfg := fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 300\n", c.Socket, c.Socket)
	if err := os.WriteFile(c.crictlConfig, []byte(crictlCfg), 0o644); err != nil {
		t.Fatalf("write crictl config: %v", err)
	}
	var wrap []string
	if opts.Netns != nil {
		wrap = opts.Netns.Wrap()
	}
	p, err := startProcessIn(wrap, "containerd", bin, []string{"--config", cfg, "--log-level", "debug"}, opts.Env, dir)
	if err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	c.Proc = p
	cleanupProcess(t, p)
	err = waitReady(p, func(ctx context.Context) error {
		if _, err := os.Stat(c.Socket); err != nil {
			return err
		}
		_, err := c.Crictl(t, "images", "-q")
		return err
	})
	if err != nil {
		t.Fatalf("containerd: %v", err)
	}
	return c
}

func writeMirrors(t testing.TB, certsDir string, mirrors map[string]string) {
	t.Helper()
	hosts := make([]string, 0, len(mirrors))
	for h := range mirrors {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, host := range hosts {
		d := filepath.Join(certsDir, host)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("certs.d: %v", err)
		}
		toml := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+host, mirrors[host])
		if err := os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(toml), 0o644); err != nil {
			t.Fatalf("hosts.toml: %v", err)
		}
	}
}

// Crictl runs crictl against this daemon.
func (c *Containerd) Crictl(t testing.TB, args ...string) ([]byte, error) {
	t.Helper()
	return run(crictlBin(t), append([]string{"--config", c.crictlConfig}, args...)...)
}

// CrictlPull pulls ref through the CRI, exactly as kubelet does, and returns
// the image ID (the config digest).
func (c *Containerd) CrictlPull(t testing.TB, ref string) string {
	t.Helper()
	if _, err := c.Crictl(t, "pull", ref); err != nil {
		t.Fatalf("crictl pull %s: %v", ref, err)
	}
	return c.CrictlInspect(t, ref).ID
}

// CRIImage is the status part of `crictl inspecti -o json`.
type CRIImage struct {
	ID          string   `json:"id"`
	RepoTags    []string `json:"repoTags"`
	RepoDigests []string `json:"repoDigests"`
	Size        string   `json:"size"`
}

// ManifestDigest returns the digest part of the first repo digest: the
// digest of the manifest or index that the pull resolved.
func (im CRIImage) ManifestDigest() string {
	for _, rd := range im.RepoDigests {
		if _, d, ok := strings.Cut(rd, "@"); ok {
			return d
		}
	}
	return ""
}

// CrictlInspect returns the CRI's record of a pulled image.
func (c *Containerd) CrictlInspect(t testing.TB, ref string) CRIImage {
	t.Helper()
	out, err := c.Crictl(t, "inspecti", "-o", "json", ref)
	if err != nil {
		t.Fatalf("crictl inspecti %s: %v", ref, err)
	}
	var v struct {
		Status CRIImage `json:"status"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("parse crictl inspecti %s: %v\n%s", ref, err, out)
	}
	return v.Status
}

// CrictlRemove removes an image, so that the next pull goes to the registry
// again.
func (c *Containerd) CrictlRemove(t testing.TB, ref string) {
	t.Helper()
	if _, err := c.Crictl(t, "rmi", ref); err != nil {
		t.Fatalf("crictl rmi %s: %v", ref, err)
	}
}

// Ctr runs ctr against this daemon in CtrNamespace.
func (c *Containerd) Ctr(t testing.TB, args ...string) ([]byte, error) {
	t.Helper()
	return run(ctrBin(t), append([]string{"--address", c.Socket, "--namespace", CtrNamespace}, args...)...)
}

// CtrPull pulls and unpacks ref with `ctr images pull` and returns the
// digest of the manifest or index it resolved. ctr, unlike the CRI, needs
// --plain-http for an HTTP registry.
func (c *Containerd) CtrPull(t testing.TB, ref string) string {
	t.Helper()
	if _, err := c.Ctr(t, "images", "pull", "--plain-http", "--snapshotter", "native", ref); err != nil {
		t.Fatalf("ctr images pull %s: %v", ref, err)
	}
	return c.CtrImageDigest(t, ref)
}

// CtrImageDigest returns the target digest of image ref from `ctr images
// ls` (columns REF TYPE DIGEST ...).
func (c *Containerd) CtrImageDigest(t testing.TB, ref string) string {
	t.Helper()
	out, err := c.Ctr(t, "images", "ls", "name=="+ref)
	if err != nil {
		t.Fatalf("ctr images ls: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 3 && f[0] == ref {
			return f[2]
		}
	}
	t.Fatalf("ctr images ls has no %s:\n%s", ref, out)
	return ""
}
