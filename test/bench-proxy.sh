#!/usr/bin/env bash
# test/bench-proxy.sh — the benchmark of pulls through Clash nodes (CONTRIBUTING.md, "Benchmarks").
# It prints a markdown table: one large blob (512 MiB) pulled cold through
# the edge via each node type — ss aes-256-gcm, ss chacha20-ietf-poly1305,
# SOCKS5 (microsocks), HTTP CONNECT (tinyproxy), trojan, vmess (v2ray) —
# against the same proxy server used by its own client (ss-local, trojan
# and v2ray in client mode, curl's own SOCKS5 and CONNECT), curl being the
# downloader on both sides; the ratio edge/client should be ≥ 0.9.
#
# It is a report, not a test: it never fails on a time, only when a
# measurement cannot be made. Everything runs on 127.0.0.1; each edge pull
# starts an edge with empty storage. About 3 minutes on 2 cores; the
# table's header gives the load average, because other work on the machine
# skews every row.
#
# Needs what test/all.sh installs (docker-registry, curl, shadowsocks-libev,
# microsocks, tinyproxy, trojan, v2ray); missing packages are installed
# here the same way. Environment: BENCH_PROXY_MIB (default 512),
# BENCH_PROXY_REPS (default 3, the median is shown), BENCH_OUT=FILE also
# writes the table to FILE; HARNESS_EDGE_BIN measures a given edge binary
# instead of building the working tree.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
export PATH="$ROOT/bin/tools:$PATH:/usr/sbin"

# shellcheck source=test/apt-install.sh
source "$ROOT/test/apt-install.sh"
apt_install_missing bench-proxy.sh docker-registry:docker-registry curl:curl ss-server:shadowsocks-libev microsocks:microsocks \
	tinyproxy:tinyproxy trojan:trojan v2ray:v2ray

work=$(mktemp -d "${TMPDIR:-/tmp}/proxy-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Built once, plain (no -race): the benchmark measures it.
if [[ -z ${HARNESS_EDGE_BIN:-} ]]; then
	go build -o "$work/edge" ./edge/cmd/edge
	export HARNESS_EDGE_BIN="$work/edge"
fi
export BENCH_OUT=${BENCH_OUT:-$work/table.md}

status=0
go test -tags bench -run '^TestProxyBenchTable$' -count=1 -v -timeout 30m ./test/bench/proxy/ || status=$?

echo
if [[ -s $BENCH_OUT ]]; then
	cat "$BENCH_OUT"
else
	echo "bench-proxy.sh: no table was produced"
fi
if ((status != 0)); then
	echo "bench-proxy.sh: a measurement failed (exit $status); see the log above" >&2
fi
exit "$status"
