#!/usr/bin/env bash
# test/bench-kube.sh — the Kubernetes benchmark: the control plane in
# in-cluster mode and its injector webhook on a real kube-apiserver (etcd +
# kube-apiserver on 127.0.0.1, see test/harness StartKube; no kubelet,
# scheduler or controller-manager). It prints a markdown table, every row
# with its baseline measured in the same run and the ratio:
#
#   1. pod-create latency through the apiserver at a fixed open-loop rate
#      (20 pods/s for 20 s per arm) in an opted-in namespace, where the
#      webhook rewrites the images (checked on every pod), against an
#      unlabelled namespace the webhook is not called for; target <= 1.3x;
#   2. the webhook handler's p50/p99 over HTTPS (the control plane's own
#      server, 100 reviews/s) and in process, opted-in against not;
#   3. labelling a namespace -> its four edge objects exist (median over
#      10), against the benchmark creating the same four objects itself;
#   4. 1 000 namespaces created with the label at once -> all 4 000 edge
#      objects exist, with --workers 4 and 16 (each on a fresh apiserver),
#      and the control plane's peak RSS and RSS per namespace.
#
# The control plane runs with the token of the selfhost-controlplane
# ServiceAccount and the RBAC of deploy/rbac.yaml. It is a report, not a
# test: nothing fails on time; the command exits non-zero only when
# something functional breaks (images not rewritten, objects never
# created, the control plane exiting). A row-4 run that does not finish
# within BENCH_KUBE_RECONCILE_TIMEOUT (default 120s) is reported as
# incomplete with the rate reached and an extrapolation. About 8-10
# minutes on 2 cores.
#
# Needs etcd (Debian etcd-server, installed when missing) and
# bin/tools/kube-apiserver, built here the way test/all.sh builds it
# (seconds with a warm Go cache). Environment: BENCH_QUICK=1 (a small smoke
# run; its numbers mean little), BENCH_KUBE_POD_RATE (20),
# BENCH_KUBE_POD_DURATION (20s), BENCH_KUBE_HOOK_RATE (100),
# BENCH_KUBE_HOOK_DURATION (10s), BENCH_KUBE_LABEL_NAMESPACES (10),
# BENCH_KUBE_NAMESPACES (1000), BENCH_KUBE_WORKERS (4,16),
# BENCH_KUBE_RECONCILE_TIMEOUT (120s); BENCH_OUT=FILE also writes the table
# to FILE; HARNESS_CONTROLPLANE_BIN measures a given control-plane binary
# instead of building the working tree.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
export PATH="$ROOT/bin/tools:$PATH:/usr/sbin"

echo "bench-kube.sh: load at the start: $(uptime)"

# shellcheck source=test/apt-install.sh
source "$ROOT/test/apt-install.sh"
apt_install_missing bench-kube.sh etcd:etcd-server

# kube-apiserver v1.37.2 from tools/k8s, exactly as test/all.sh builds it.
KUBE_LDFLAGS="-X k8s.io/component-base/version.gitVersion=v1.37.2 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"
mkdir -p bin/tools bin/test
(cd tools/k8s && go build -ldflags "$KUBE_LDFLAGS" -o ../../bin/tools/kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver)
export KUBE_APISERVER="$ROOT/bin/tools/kube-apiserver"

# The control plane, plain (no -race): the benchmark measures it.
if [[ -z ${HARNESS_CONTROLPLANE_BIN:-} ]]; then
	go build -o bin/test/controlplane ./controlplane/cmd/controlplane
	export HARNESS_CONTROLPLANE_BIN="$ROOT/bin/test/controlplane"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/kube-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
export BENCH_OUT=${BENCH_OUT:-$work/table.md}

status=0
go test -tags bench -run '^TestKubeBenchTable$' -count=1 -v -timeout 40m ./test/bench/kube/ || status=$?

echo
if [[ -s $BENCH_OUT ]]; then
	cat "$BENCH_OUT"
else
	echo "bench-kube.sh: no table was produced"
fi
echo
echo "bench-kube.sh: load at the end: $(uptime)"
if ((status != 0)); then
	echo "bench-kube.sh: a functional check or a measurement failed (exit $status); see the log above" >&2
fi
exit "$status"
