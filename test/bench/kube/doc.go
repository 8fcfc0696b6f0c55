// Package kube measures the in-cluster side of k8s-selfhost-repo on a
// real kube-apiserver (test/harness StartKube: etcd and kube-apiserver on
// 127.0.0.1, no kubelet, scheduler or controller-manager). The control
// plane is the real binary in in-cluster mode, run with the token of the
// selfhost-system/selfhost-controlplane ServiceAccount after
// deploy/rbac.yaml was applied, so it has only the RBAC the chart grants.
//
// It measures, each against a baseline taken in the same run:
//
//  1. pod-create latency through the apiserver at a fixed open-loop rate in
//     an opted-in namespace (the injector webhook rewrites the images)
//     against an unlabelled namespace (the webhook is not called);
//  2. the webhook handler's own latency over HTTPS (and in process), for
//     an opted-in namespace against one that is not;
//  3. the time from labelling a namespace until its four edge objects
//     exist, against the benchmark creating the same four objects itself;
//  4. the reconcile of many namespaces labelled at once (1 000 by
//     default): time until every edge object exists and the control
//     plane's peak and per-namespace memory.
//
// It is a report, not a test of speed: nothing fails on a wall-clock time;
// the test fails only when something functional breaks (an image not
// rewritten, an object never created, the control plane exiting). The
// test files carry the "bench" build tag so that `go test ./...` never
// runs them; run test/bench-kube.sh, which prints the table.
package kube
