#!/usr/bin/env bash
# test/bench.sh — the benchmark of the edge (CONTRIBUTING.md, "Benchmarks"). It prints a
# markdown table at the end: the edge against nginx serving the same file,
# a direct S3 GetObject, the upstream pulled directly, and Debian's
# docker-registry in proxy mode; 100 concurrent cold clients; peak RSS under
# 16 concurrent cold 1 GiB pulls; manifest hit latency at a fixed rate.
#
# It is a report, not a test: a missed target is marked in the table and
# the command still succeeds; it fails only when a measurement cannot be
# made. Everything runs on 127.0.0.1. It takes 10–16 minutes on 2 cores
# (longer when other work keeps the machine busy: each measurement first
# waits up to 30 s for an idle machine) and up to ~36 GiB of temporary disk
# under ${TMPDIR:-/tmp} for the RSS row (checked first; the row is skipped
# when the space is not there), all removed at the end.
#
# Needs what test/all.sh installs: docker-registry, nginx (nginx-light), wrk
# from Debian, versitygw in bin/tools. Missing pieces are installed the way
# test/all.sh does it. BENCH_QUICK=1 runs a small smoke version (its numbers
# mean little); BENCH_OUT=FILE also writes the table to FILE;
# HARNESS_EDGE_BIN=PATH (with BENCH_EDGE_DESC=TEXT for the header) measures
# a given edge binary instead of building the working tree.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
export PATH="$ROOT/bin/tools:$PATH:/usr/sbin"

# Debian packages: only when a binary is missing, with their services kept
# from starting (the benchmark starts its own servers on its own ports).
# shellcheck source=test/apt-install.sh
source "$ROOT/test/apt-install.sh"
apt_install_missing bench.sh docker-registry:docker-registry nginx:nginx-light wrk:wrk

# versitygw (the S3 server) from the pinned tools module.
if [[ -z ${VERSITYGW:-} ]] && ! command -v versitygw >/dev/null 2>&1; then
	echo "bench.sh: building the pinned Go tools into bin/tools"
	mkdir -p bin/tools
	(cd tools && go build -o ../bin/tools/ tool)
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/edge-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
# The edge is built once, plain (no -race): the benchmark measures it. A
# preset HARNESS_EDGE_BIN benchmarks that binary instead (another commit,
# a patched build).
if [[ -z ${HARNESS_EDGE_BIN:-} ]]; then
	go build -o "$work/edge" ./edge/cmd/edge
	export HARNESS_EDGE_BIN="$work/edge"
	rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
	[[ -z $(git status --porcelain -- edge go.mod go.sum 2>/dev/null) ]] || rev+=" + uncommitted changes"
	export BENCH_EDGE_DESC=${BENCH_EDGE_DESC:-"working tree at $rev"}
else
	export BENCH_EDGE_DESC=${BENCH_EDGE_DESC:-"$HARNESS_EDGE_BIN"}
fi
export BENCH_OUT=${BENCH_OUT:-$work/table.md}

status=0
go test -tags bench -run '^TestBenchmarkTable$' -count=1 -v -timeout 40m ./test/bench/edge/ || status=$?

echo
if [[ -s $BENCH_OUT ]]; then
	cat "$BENCH_OUT"
else
	echo "bench.sh: no table was produced"
fi
if ((status != 0)); then
	echo "bench.sh: a measurement failed (exit $status); see the log above" >&2
fi
exit "$status"
