// Package harness starts the real servers and clients the end-to-end tests
// run against: Debian's docker-registry (the test upstream and the
// proxy-mode peer), the edge binary built from this repository, a private
// containerd daemon driven through crictl and ctr, and the skopeo and crane
// command-line clients. It also builds test images with go-containerregistry
// and offers a fault-injecting reverse proxy for upstream failures.
// StartKube runs a real kube-apiserver (built from tools/k8s) on its own
// Debian etcd, with an admin clientset and kubeconfig and ServiceAccount
// tokens from the TokenRequest API, for controller, webhook and RBAC tests.
// StartCluster runs a real single-node cluster in a network namespace of
// its own (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
// kubelet with containerd and the CNI bridge, kube-proxy in iptables mode,
// CoreDNS and a docker-registry on the node), one per machine at a time,
// with images built by the test (pause, busybox); it restores everything
// it changed on the host when the test ends.
//
// Every Start function takes a testing.TB, binds to a free 127.0.0.1 port
// (the cluster: fixed ports inside its own network namespace), waits for readiness with a deadline and registers a t.Cleanup that stops
// the process (and dumps the tail of its log when the test failed). A
// missing binary is a t.Fatal with an install hint, never a skip: test/all.sh
// installs everything, and a silently skipped end-to-end test is worse than
// a red one.
package harness
