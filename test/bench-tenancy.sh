#!/usr/bin/env bash
# The tenancy benchmark: what the storage broker costs (warm throughput
# through presigned GETs vs an edge holding the S3 keys; a warm pull with
# the proof held vs one that needs the proof again). Prints a table; fails
# only when a measurement could not be taken. Needs what test/all.sh
# installs and builds (run it once first).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
export PATH="$ROOT/bin/tools:$PATH:/usr/sbin"
export VERSITYGW="$ROOT/bin/tools/versitygw" CRANE="$ROOT/bin/tools/crane"
mkdir -p bin/test
go build -o bin/test/tokenproxy ./internal/upstream/upstreamtest/tokenproxy
go build -o bin/test/edge ./edge/cmd/edge
go build -o bin/test/controlplane ./controlplane/cmd/controlplane
export HARNESS_TOKENPROXY_BIN="$ROOT/bin/test/tokenproxy" HARNESS_EDGE_BIN="$ROOT/bin/test/edge" HARNESS_CONTROLPLANE_BIN="$ROOT/bin/test/controlplane"
echo "bench-tenancy.sh: load at the start: $(uptime)"
work=$(mktemp -d "${TMPDIR:-/tmp}/tenancy-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
export BENCH_OUT=$work/table.md
status=0
go test -tags bench -run '^TestTenancyBenchTable$' -count=1 -v -timeout 20m ./test/e2e/ >"$work/log" 2>&1 || status=$?
if [[ $status -ne 0 ]]; then tail -40 "$work/log"; fi
if [[ -s $BENCH_OUT ]]; then cat "$BENCH_OUT"; else echo "bench-tenancy.sh: no table was produced"; fi
echo "bench-tenancy.sh: load at the end: $(uptime)"
exit $status
