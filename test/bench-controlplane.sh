#!/usr/bin/env bash
# test/bench-controlplane.sh — the benchmark of the control plane (CONTRIBUTING.md, "Benchmarks").
# It prints a markdown table: for N = 100, 1 000 and 5 000 edges, the time
# from an admin change (PutUpstream) until the last edge ACKed it (p50/p99
# over repeated changes), the control plane's memory per connected edge and
# its CPU time per push, with the targets (1 000 edges all ACKed in < 1 s;
# < 64 KiB per edge) marked met or not.
#
# The control plane is the real binary (controlplane --standalone), built
# here; the edges are gRPC clients inside the benchmark process, one TCP
# connection each over loopback (see test/benchcp). It is a report, not a
# test: it fails only when a measurement cannot be made. A few minutes on
# 2 cores.
#
# Environment: BENCH_CP_EDGES (default 100,1000,5000), BENCH_CP_NAMESPACES
# (default 10: edges spread over 10 namespaces; "per-edge" gives every edge
# its own namespace), BENCH_CP_REPS (default 10 changes per row),
# BENCH_CP_DEBOUNCE (default 50ms, the control plane's default),
# BENCH_OUT=FILE also writes the table to FILE; HARNESS_CONTROLPLANE_BIN
# measures a given binary instead of building the working tree.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

work=$(mktemp -d "${TMPDIR:-/tmp}/cp-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Built once, plain (no -race): the benchmark measures it.
if [[ -z ${HARNESS_CONTROLPLANE_BIN:-} ]]; then
	go build -o "$work/controlplane" ./controlplane/cmd/controlplane
	export HARNESS_CONTROLPLANE_BIN="$work/controlplane"
fi
export BENCH_OUT=${BENCH_OUT:-$work/table.md}

status=0
go test -tags bench -run '^TestControlPlaneBenchTable$' -count=1 -v -timeout 20m ./test/bench/controlplane/ || status=$?

echo
if [[ -s $BENCH_OUT ]]; then
	cat "$BENCH_OUT"
else
	echo "bench-controlplane.sh: no table was produced"
fi
if ((status != 0)); then
	echo "bench-controlplane.sh: a measurement failed (exit $status); see the log above" >&2
fi
exit "$status"
