#!/usr/bin/env bash
# test/bench-cluster.sh — the cluster benchmark on a real single-node
# cluster (test/harness StartCluster: kubelet, containerd, kube-proxy in
# iptables mode, CoreDNS, all in a network namespace of its own), with the
# chart installed from images built from this checkout in the same run. It
# prints a markdown table, every ratio against a baseline measured in the
# same run (see test/e2e/cluster_bench_test.go):
#
#   1. helm install -> the first pod Running through its edge;
#   2. pod start of a large image (a fresh one per repetition): kubelet
#      pulling directly from the upstream vs through the namespace's edge
#      cold vs through another namespace's edge warm (shared S3), the arms
#      interleaved per repetition, the node's copy removed between arms;
#   3. pod-create latency with the webhook (served from the control
#      plane's pods) vs an unlabelled namespace, interleaved;
#   4. the images' compressed sizes.
#
# A report, not a test: nothing fails on time. Needs root and the tools
# test/all.sh installs and builds (run it once first). Environment:
# BENCH_CLUSTER_REPS (3), BENCH_CLUSTER_MIB (200), BENCH_CLUSTER_CREATES
# (30); BENCH_OUT=FILE also writes the table to FILE.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
export PATH="$ROOT/bin/tools:$PATH:/usr/sbin"
for t in kube-apiserver kubelet kube-controller-manager kube-scheduler kube-proxy coredns helm versitygw crictl; do
	[[ -x bin/tools/$t ]] || { echo "bench-cluster.sh: bin/tools/$t is missing: run test/all.sh once" >&2; exit 1; }
done
export KUBE_APISERVER="$ROOT/bin/tools/kube-apiserver" KUBELET="$ROOT/bin/tools/kubelet"
export KUBE_CONTROLLER_MANAGER="$ROOT/bin/tools/kube-controller-manager"
export KUBE_SCHEDULER="$ROOT/bin/tools/kube-scheduler" KUBE_PROXY="$ROOT/bin/tools/kube-proxy"
export COREDNS="$ROOT/bin/tools/coredns" HELM="$ROOT/bin/tools/helm" VERSITYGW="$ROOT/bin/tools/versitygw" CRICTL="$ROOT/bin/tools/crictl"
mkdir -p bin/test
go build -o bin/test/tokenproxy ./internal/upstream/upstreamtest/tokenproxy
export HARNESS_TOKENPROXY_BIN="$ROOT/bin/test/tokenproxy"

echo "bench-cluster.sh: load at the start: $(uptime)"
work=$(mktemp -d "${TMPDIR:-/tmp}/cluster-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
export BENCH_OUT=${BENCH_OUT:-$work/table.md}
status=0
go test -tags bench -run '^TestClusterBenchTable$' -count=1 -v -timeout 30m ./test/e2e/ || status=$?
echo
if [[ -s $BENCH_OUT ]]; then cat "$BENCH_OUT"; else echo "bench-cluster.sh: no table was produced"; fi
echo "bench-cluster.sh: load at the end: $(uptime)"
exit $status
