package harness

// What a test cluster changes on the machine outside its own directories,
// and how it is put back. kubelet, containerd 1.6 and the CNI plugins use
// a few fixed paths and global settings: kubelet writes the sysctls below
// and its device-plugin socket directory, containerd its shim sockets and
// runc state under /run/containerd and pod network namespaces under
// /run/netns, libcni its cache under /var/lib/cni, kubelet symlinks under
// /var/log/containers, and pods run in cgroups under cgroupRoot. So only
// one cluster may run on a machine at a time (clusterLock), and the state
// is recorded before the start and restored at the end whatever the
// outcome.

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ClusterLockPath is the machine-wide lock that serializes test clusters,
// also across test binaries that `go test ./...` runs in parallel.
const ClusterLockPath = "/run/k8s-selfhost-repo-test-cluster.lock"

// clusterLockWait bounds how long StartCluster queues for another test
// binary's cluster (each lasts a few minutes at most).
const clusterLockWait = 20 * time.Minute

// clusterCgroup is kubelet's cgroupRoot: every pod's cgroup is below it,
// in every cgroup v1 hierarchy (or the one v2 hierarchy).
const clusterCgroup = "selfhost-test-cluster"

// kubeletSysctls are the global settings kubelet's container manager
// writes (protectKernelDefaults false): restored after the cluster.
var kubeletSysctls = []string{
	"kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory", "vm/panic_on_oom",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

// fixedPaths are the paths outside the cluster's directories that the
// node's components create; removed at the end when they did not exist
// before (the lock guarantees no other cluster uses them meanwhile).
var fixedPaths = []string{"/var/lib/kubelet", "/var/lib/cni", "/var/log/containers", "/var/log/pods", "/run/containerd"}

// takeClusterLock waits for the machine-wide lock and holds it until the
// test ends (the cleanup is registered first, so it runs last).
func takeClusterLock(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(ClusterLockPath, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatalf("cluster lock %s: %v", ClusterLockPath, err)
	}
	deadline := time.Now().Add(clusterLockWait)
	logged := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if err != syscall.EWOULDBLOCK {
			_ = f.Close() // the Flock error is the one to report
			t.Fatalf("cluster lock %s: %v", ClusterLockPath, err)
		}
		if !logged {
			holder, _ := os.ReadFile(ClusterLockPath)
			t.Logf("cluster: waiting for %s (held by pid %s): one test cluster per machine", ClusterLockPath, strings.TrimSpace(string(holder)))
			logged = true
		}
		if time.Now().After(deadline) {
			_ = f.Close() // nothing was written; the timeout is the error
			t.Fatalf("cluster lock %s: still held after %v", ClusterLockPath, clusterLockWait)
		}
		time.Sleep(250 * time.Millisecond) // polling the lock: flock cannot wait with a deadline
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	t.Cleanup(func() {
		_ = f.Truncate(0)
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		_ = f.Close() // best effort like the two above: only a pid was written
	})
}

// HostState is what a cluster may change outside its directories.
type HostState struct {
	Sysctls map[string]string
	// Exists records which fixed paths existed.
	Exists map[string]bool
	// PodNetns are the /run/netns entries named cni-* (pods' namespaces).
	PodNetns []string
}

// CaptureHostState records the state a cluster may change.
func CaptureHostState() (HostState, error) {
	s := HostState{Sysctls: map[string]string{}, Exists: map[string]bool{}}
	for _, k := range kubeletSysctls {
		b, err := os.ReadFile(filepath.Join("/proc/sys", k))
		if err != nil {
			return s, fmt.Errorf("read sysctl %s: %w", k, err)
		}
		s.Sysctls[k] = strings.TrimSpace(string(b))
	}
	for _, p := range fixedPaths {
		_, err := os.Lstat(p)
		s.Exists[p] = err == nil
	}
	s.PodNetns = podNetns()
	return s, nil
}

func podNetns() []string {
	var out []string
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "cni-") {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// Diff describes how now differs from s (empty when it is restored).
func (s HostState) Diff(now HostState) []string {
	var d []string
	for _, k := range kubeletSysctls {
		if s.Sysctls[k] != now.Sysctls[k] {
			d = append(d, fmt.Sprintf("sysctl %s: %s, was %s", k, now.Sysctls[k], s.Sysctls[k]))
		}
	}
	for _, p := range fixedPaths {
		if s.Exists[p] != now.Exists[p] {
			d = append(d, fmt.Sprintf("%s: exists %v, was %v", p, now.Exists[p], s.Exists[p]))
		}
	}
	if strings.Join(s.PodNetns, ",") != strings.Join(now.PodNetns, ",") {
		d = append(d, fmt.Sprintf("/run/netns cni-*: %v, was %v", now.PodNetns, s.PodNetns))
	}
	return d
}

// restore writes the recorded sysctls back and removes the fixed paths
// and pod namespaces that did not exist before; it returns what failed.
func (s HostState) restore() []error {
	var errs []error
	for _, k := range kubeletSysctls {
		p := filepath.Join("/proc/sys", k)
		if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == s.Sysctls[k] {
			continue
		}
		if err := os.WriteFile(p, []byte(s.Sysctls[k]+"\n"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl %s: %w", k, err))
		}
	}
	before := map[string]bool{}
	for _, n := range s.PodNetns {
		before[n] = true
	}
	for _, n := range podNetns() {
		if !before[n] {
			p := filepath.Join("/run/netns", n)
			_ = syscall.Unmount(p, syscall.MNT_DETACH)
			if err := os.Remove(p); err != nil {
				errs = append(errs, fmt.Errorf("remove pod netns %s: %w", p, err))
			}
		}
	}
	for _, p := range fixedPaths {
		if s.Exists[p] {
			continue
		}
		unmountUnder(p)
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", p, err))
		}
	}
	return errs
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountUnder detaches every mount at or below dir (kubelet's volume
// tmpfs and its bind mount of the root directory on itself, containerd's
// rootfs and shm mounts), deepest first; a mount may be stacked, so each
// point is unmounted until it is gone.
func unmountUnder(dir string) []string {
	var failed []string
	for i := 0; i < 5; i++ {
		mps := mountsUnder(dir)
		if len(mps) == 0 {
			return nil
		}
		failed = failed[:0]
		for _, mp := range mps {
			if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
				failed = append(failed, mp+": "+err.Error())
			}
		}
	}
	return append(failed, mountsUnder(dir)...)
}

// cgroupDirs are the cluster's cgroupRoot in every mounted hierarchy.
func cgroupDirs() []string {
	entries, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return nil
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil { // v2
		return []string{filepath.Join("/sys/fs/cgroup", clusterCgroup)}
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() { // v1 hierarchies, and the hybrid "unified" v2 one
			continue
		}
		out = append(out, filepath.Join("/sys/fs/cgroup", e.Name(), clusterCgroup))
	}
	return out
}

// makeClusterCgroup creates cgroupRoot in every hierarchy (kubelet wants
// it to exist); a cpuset copies its parent's CPUs and memory nodes, or no
// process could join it.
func makeClusterCgroup() error {
	for _, d := range cgroupDirs() {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", d, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			parent, err := os.ReadFile(filepath.Join(filepath.Dir(d), f))
			if err != nil {
				continue // not a cpuset hierarchy
			}
			if err := os.WriteFile(filepath.Join(d, f), parent, 0o644); err != nil {
				return fmt.Errorf("cgroup %s: %s: %w", d, f, err)
			}
		}
	}
	return nil
}

// cgroupProcs lists the processes in the cluster's cgroups.
func cgroupProcs() []int {
	seen := map[int]bool{}
	for _, d := range cgroupDirs() {
		_ = filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() || e.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, l := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(l); err == nil {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	var out []int
	for pid := range seen {
		out = append(out, pid)
	}
	sort.Ints(out)
	return out
}

// removeClusterCgroup kills what still runs in the cluster's cgroups and
// removes them, leaves first.
func removeClusterCgroup() error {
	deadline := time.Now().Add(10 * time.Second)
	for pids := cgroupProcs(); len(pids) > 0; pids = cgroupProcs() {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes still in cgroup %s: %v", clusterCgroup, pids)
		}
		time.Sleep(50 * time.Millisecond) // a killed process leaves its cgroup a moment later
	}
	var errs []string
	for _, d := range cgroupDirs() {
		var dirs []string
		_ = filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, p := range dirs {
			if err := syscall.Rmdir(p); err != nil && err != syscall.ENOENT {
				errs = append(errs, p+": "+err.Error())
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("remove cgroups: %s", strings.Join(errs, "; "))
	}
	return nil
}

// procsWithArg lists the processes whose command line has an argument
// containing s (the shims of one containerd carry its socket path).
func procsWithArg(s string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, arg := range strings.Split(string(b), "\x00") {
			if strings.Contains(arg, s) {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// killProcsWithArg SIGKILLs procsWithArg(s) and waits until they are gone.
func killProcsWithArg(s string) error {
	deadline := time.Now().Add(10 * time.Second)
	for pids := procsWithArg(s); len(pids) > 0; pids = procsWithArg(s) {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes with %q still running: %v", s, pids)
		}
		time.Sleep(50 * time.Millisecond) // a killed process is reaped by its parent a moment later
	}
	return nil
}
