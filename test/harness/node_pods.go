package harness

// Helpers for tests that run pods on the test cluster.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PodRunning is a WaitPod condition: phase Running and every container
// ready.
func PodRunning(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, cs := range p.Status.ContainerStatuses {
		if !cs.Ready {
			return false
		}
	}
	return true
}

// PodSucceeded is a WaitPod condition: phase Succeeded.
func PodSucceeded(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodSucceeded }

// WaitPod waits until pod ns/name satisfies ok and returns it. It fails
// the test at the timeout, or at once when the pod failed (unless ok
// accepts that), with the pod's status, events and container logs.
func (c *Cluster) WaitPod(t testing.TB, ns, name string, timeout time.Duration, ok func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var p *corev1.Pod
	var err error
	for {
		p, err = c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil && ok(p) {
			return p
		}
		if err == nil && p.Status.Phase == corev1.PodFailed {
			t.Fatalf("pod %s/%s failed:\n%s", ns, name, c.DescribePod(ns, name))
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pod %s/%s: condition not met after %v (last error %v):\n%s", ns, name, timeout, err, c.DescribePod(ns, name))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// DescribePod is a short account of a pod for failure messages: phase,
// container states, the namespace's events about it and each container's
// log tail (read through the kubelet).
func (c *Cluster) DescribePod(ns, name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var b strings.Builder
	p, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Sprintf("get pod: %v", err)
	}
	fmt.Fprintf(&b, "phase %s node %q ip %s\n", p.Status.Phase, p.Spec.NodeName, p.Status.PodIP)
	for _, cs := range p.Status.ContainerStatuses {
		fmt.Fprintf(&b, "container %s: ready=%v restarts=%d state=%+v last=%+v\n", cs.Name, cs.Ready, cs.RestartCount, cs.State, cs.LastTerminationState)
	}
	evs, err := c.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err == nil {
		for _, e := range evs.Items {
			fmt.Fprintf(&b, "event %s %s: %s\n", e.Type, e.Reason, e.Message)
		}
	}
	for _, ct := range p.Spec.Containers {
		tail := int64(40)
		logs, err := c.Client.CoreV1().Pods(ns).GetLogs(name, &corev1.PodLogOptions{Container: ct.Name, TailLines: &tail}).DoRaw(ctx)
		fmt.Fprintf(&b, "log of %s (err %v):\n%s\n", ct.Name, err, logs)
	}
	return b.String()
}

// RSS is the resident memory of the cluster's processes (components,
// apiserver, etcd, processes started with StartProcess, containerd's
// shims and every pod's processes), in bytes.
func (c *Cluster) RSS() int64 {
	c.mu.Lock()
	pids := map[int]bool{}
	for _, p := range c.procs {
		if !p.Exited() {
			pids[p.Pid()] = true
		}
	}
	c.mu.Unlock()
	k := c.Kube // its own lock guards its apiserver
	k.mu.Lock()
	if k.api != nil && !k.api.Exited() {
		pids[k.api.Pid()] = true
	}
	k.mu.Unlock()
	for _, pid := range append(procsWithArg(c.Containerd.Socket), cgroupProcs()...) {
		pids[pid] = true
	}
	var sum int64
	for pid := range pids {
		if v, err := MemStatus(pid, "VmRSS"); err == nil {
			sum += v
		}
	}
	return sum
}
