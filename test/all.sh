#!/usr/bin/env bash
# test/all.sh — the one test command of this repository, locally and in CI
# (.ci/run execs it). It works on a fresh Debian 12 machine that has only Go:
#
#   1. installs the Debian packages the tests run (skipped when every binary
#      is already there) and keeps their system services stopped: every test
#      starts its own servers on its own 127.0.0.1 ports;
#   2. builds the Go tools pinned by `tool` lines in tools/go.mod (crane,
#      versitygw, crictl), kube-apiserver v1.37.2 (tools/k8s/go.mod; run
#      by test/harness StartKube with Debian's etcd-server), kubelet,
#      kube-controller-manager, kube-scheduler, kube-proxy (the same
#      module), CoreDNS (tools/coredns) for StartCluster and golangci-lint
#      (tools/lint) into bin/tools,
#      and the edge and the test token proxy into bin/test, once for every
#      test package;
#   3. gofmt check, go vet, golangci-lint (.golangci.yml, with the import
#      rules that keep the architecture), go test -race of every package (unit and the
#      end-to-end tests in test/e2e), then a short fuzz run of every Fuzz
#      target found; test/readme-sections.sh checks the READMEs and docs/
#      (size, zh-CN sections in step, relative links);
#   4. prints a one-line summary per step and exits non-zero if any failed.
#
# Idempotent; runs from any working directory. Go build cache: an existing
# GOCACHE is respected; otherwise Go's default (~/.cache/go-build) is used,
# which CI keeps between runs — a cold run compiles for ~10 minutes on 2 cores
# (kube-apiserver ~4-5 min, versitygw and crictl most of the rest), a warm
# one for seconds.
#
# Environment: FUZZTIME (default 20000x: a count of inputs, not a duration,
# because a -fuzztime deadline that expires while the fuzzer is busy on a
# loaded machine fails the run with "context deadline exceeded") per fuzz
# target; TEST_TIMEOUT (default
# 30m per test binary, so that a hung package fails well inside CI's 90 min);
# GOTEST_FLAGS adds flags to `go test` (e.g. GOTEST_FLAGS='-run=TestPull -v');
# -short is refused, because this run skips nothing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
FUZZTIME=${FUZZTIME:-20000x}
TEST_TIMEOUT=${TEST_TIMEOUT:-30m}
START=$(date +%s)
# The full run skips nothing: -short is a contributor's quick loop over one
# package (testkit.Integration skips the tests that start real servers).
case "${GOTEST_FLAGS:-}" in
*-short* | *-test.short*)
	echo "test/all.sh: GOTEST_FLAGS must not contain -short: this run skips nothing (test/README.md)" >&2
	exit 2
	;;
esac

log() { printf '\n=== %s\n' "$*"; }

# ---------------------------------------------------------------- packages
# Binary → Debian package. ca-certificates has no binary; its bundle is
# checked by file.
declare -A PKG_OF=(
	[docker-registry]=docker-registry [skopeo]=skopeo [containerd]=containerd
	[ctr]=containerd [runc]=runc [nginx]=nginx-light [wrk]=wrk [ip]=iproute2
	[curl]=curl [ss-server]=shadowsocks-libev [microsocks]=microsocks [tinyproxy]=tinyproxy
	[trojan]=trojan [v2ray]=v2ray
	[etcd]=etcd-server # kube: etcd for test/harness StartKube
	# cluster: test/harness StartCluster's node (pods' network, kube-proxy,
	# nsenter into the node's namespace, the test images' busybox)
	[iptables]=iptables [conntrack]=conntrack [nsenter]=util-linux [busybox]=busybox-static
	[nft]=nftables # cluster: kube-proxy in nftables mode (the forwarder's test)
)
PACKAGES=(docker-registry skopeo containerd runc nginx-light wrk iproute2 curl ca-certificates
	shadowsocks-libev microsocks tinyproxy trojan v2ray
	etcd-server # kube: etcd for test/harness StartKube
	containernetworking-plugins iptables conntrack util-linux busybox-static # cluster: StartCluster
	nftables) # cluster: kube-proxy's nftables mode
# Services those packages may start on installation.
SERVICES=(nginx docker-registry containerd shadowsocks-libev tinyproxy trojan v2ray
	etcd) # kube: etcd-server's unit

missing=()
for bin in "${!PKG_OF[@]}"; do
	# /usr/sbin is not on every root PATH; the packages install there too.
	if ! command -v "$bin" >/dev/null 2>&1 && [[ ! -x /usr/sbin/$bin && ! -x /usr/bin/$bin ]]; then
		missing+=("$bin")
	fi
done
[[ -s /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates)
[[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins) # no binary on PATH

SUDO=()
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1; then
	SUDO=(sudo)
fi

# A service is stopped only through the service manager, never by process
# name: a name match could hit another engineer's (or this run's) test
# daemons.
stop_services() {
	local svc
	if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
		for svc in "${SERVICES[@]}"; do
			if systemctl list-unit-files "$svc.service" >/dev/null 2>&1 &&
				systemctl cat "$svc.service" >/dev/null 2>&1; then
				"${SUDO[@]}" systemctl disable --now "$svc.service" >/dev/null 2>&1 ||
					echo "warning: could not stop $svc.service" >&2
			fi
		done
	else
		for svc in "${SERVICES[@]}"; do
			if [[ -x /etc/init.d/$svc ]] && "${SUDO[@]}" /etc/init.d/"$svc" status >/dev/null 2>&1; then
				"${SUDO[@]}" /etc/init.d/"$svc" stop
			fi
		done
	fi
}

if ((${#missing[@]} > 0)); then
	log "apt: installing ${PACKAGES[*]} (missing: ${missing[*]})"
	# policy-rc.d 101 keeps the packages' services from starting at all
	# (honoured by invoke-rc.d and deb-systemd-invoke); an existing policy
	# is left alone.
	policy_added=0
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
		"${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
		policy_added=1
	fi
	apt_status=0
	{
		"${SUDO[@]}" apt-get update &&
			"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${PACKAGES[@]}"
	} || apt_status=$?
	if ((policy_added)); then "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d; fi
	if ((apt_status != 0)); then
		echo "all.sh: apt-get failed (exit $apt_status)" >&2
		exit "$apt_status"
	fi
fi
stop_services

# ------------------------------------------------------------------- tools
log "go: $(go version) — GOCACHE=$(go env GOCACHE)"
log "building the pinned Go tools (tools/go.mod) into bin/tools"
mkdir -p bin/tools bin/test
(cd tools && go build -o ../bin/tools/ tool)
export PATH="$ROOT/bin/tools:$PATH:/usr/sbin"
export VERSITYGW="$ROOT/bin/tools/versitygw" CRANE="$ROOT/bin/tools/crane" CRICTL="$ROOT/bin/tools/crictl" GRPCURL="$ROOT/bin/tools/grpcurl"
for t in "$VERSITYGW" "$CRANE" "$CRICTL" "$GRPCURL" "$ROOT/bin/tools/buf"; do
	[[ -x $t ]] || { echo "all.sh: $t was not built" >&2; exit 1; }
done

# --- kube: kube-apiserver for test/harness StartKube, and kubelet,
# kube-controller-manager, kube-scheduler and kube-proxy for StartCluster
# (tools/k8s/go.mod). The ldflags make them report v1.37.2 instead of
# v0.0.0-master (kubectl, helm and the node registration misread that).
# Cold ~4-5 min on 2 cores for the apiserver, ~4 more for the other four;
# with a warm GOCACHE Go finds them up to date and this takes seconds.
log "building kube-apiserver, kubelet, kube-controller-manager, kube-scheduler, kube-proxy (tools/k8s/go.mod) into bin/tools"
KUBE_LDFLAGS="-X k8s.io/component-base/version.gitVersion=v1.37.2 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"
(cd tools/k8s && go build -ldflags "$KUBE_LDFLAGS" -o ../../bin/tools/ k8s.io/kubernetes/cmd/kube-apiserver \
	k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-controller-manager \
	k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy)
export KUBE_APISERVER="$ROOT/bin/tools/kube-apiserver" KUBELET="$ROOT/bin/tools/kubelet"
export KUBE_CONTROLLER_MANAGER="$ROOT/bin/tools/kube-controller-manager"
export KUBE_SCHEDULER="$ROOT/bin/tools/kube-scheduler" KUBE_PROXY="$ROOT/bin/tools/kube-proxy"
# CoreDNS v1.15.0 with the cluster's plugins only (tools/coredns/main.go):
# the test cluster's DNS. Cold ~2 min of compiling (plus its module
# downloads); seconds when warm.
log "building coredns (tools/coredns/go.mod) into bin/tools"
(cd tools/coredns && go build -o ../../bin/tools/coredns .)
export COREDNS="$ROOT/bin/tools/coredns"
for t in "$KUBE_APISERVER" "$KUBELET" "$KUBE_CONTROLLER_MANAGER" "$KUBE_SCHEDULER" "$KUBE_PROXY" "$COREDNS"; do
	[[ -x $t ]] || { echo "all.sh: $t was not built" >&2; exit 1; }
done
# --- end kube

# --- helm: for test/e2e/chart_test.go (tools/helm/go.mod, a module of its own
# so its k8s.io versions stay out of tools/go.mod and tools/k8s). The
# ldflags make `helm template` assume Kubernetes v1.37 instead of v1.20 and
# give `helm version` its version. Cold ~2 min on 2 cores; seconds when warm.
log "building helm (tools/helm/go.mod) into bin/tools"
HELM_LDFLAGS="-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/internal/version.version=v3.22.0"
(cd tools/helm && go build -ldflags "$HELM_LDFLAGS" -o ../../bin/tools/helm helm.sh/helm/v3/cmd/helm)
export HELM="$ROOT/bin/tools/helm"
[[ -x $HELM ]] || { echo "all.sh: $HELM was not built" >&2; exit 1; }
# --- end helm

# --- lint: golangci-lint (tools/lint/go.mod, a module of its own so that its
# analyzers keep the golang.org/x/tools they were released with). The
# ldflags give `golangci-lint version` the pinned version. Cold ~4 min of CPU
# on 2 cores; seconds when warm.
log "building golangci-lint (tools/lint/go.mod) into bin/tools"
LINT_VERSION=$(cd tools/lint && go list -m -f '{{.Version}}' github.com/golangci/golangci-lint/v2)
(cd tools/lint && go build -ldflags "-X main.version=${LINT_VERSION#v} -X main.date=pinned" \
	-o ../../bin/tools/golangci-lint github.com/golangci/golangci-lint/v2/cmd/golangci-lint)
[[ -x bin/tools/golangci-lint ]] || { echo "all.sh: bin/tools/golangci-lint was not built" >&2; exit 1; }
# --- end lint

# Built once here instead of once per test binary (see test/harness).
log "building the edge, the control plane and the test token proxy into bin/test"
go build -o bin/test/edge ./edge/cmd/edge
go build -o bin/test/controlplane ./controlplane/cmd/controlplane
go build -o bin/test/tokenproxy ./internal/upstream/upstreamtest/tokenproxy
export HARNESS_EDGE_BIN="$ROOT/bin/test/edge" HARNESS_TOKENPROXY_BIN="$ROOT/bin/test/tokenproxy"
export HARNESS_CONTROLPLANE_BIN="$ROOT/bin/test/controlplane"

# The chart's images for linux/amd64 and linux/arm64 (docs/images.md), as a
# step of its own: a cold cross-compile takes minutes, and doing it here
# puts the compiled packages in GOCACHE before internal/imagebuild's
# reproducibility test and TestCluster build the same images again, so those
# tests stay far inside TEST_TIMEOUT on a cold machine.
log "building the chart's images (cmd/build-images) into bin/images"
go run ./cmd/build-images --out bin/images/layout --archives bin/images

# ------------------------------------------------------------------- checks
declare -a SUMMARY=()
failed=0
step() { # step NAME CMD...: run, record, keep going
	local name=$1 t0=$SECONDS
	shift
	log "$name"
	if "$@"; then
		SUMMARY+=("PASS  $name ($((SECONDS - t0))s)")
	else
		SUMMARY+=("FAIL  $name ($((SECONDS - t0))s)")
		failed=1
	fi
}

go_files() {
	find . -name '*.go' -not -path './bin/*' -not -path './.cache/*' -not -path '*/testdata/*' -not -path './.git/*' -print0
}

check_gofmt() {
	local bad
	bad=$(go_files | xargs -0 gofmt -l)
	if [[ -n $bad ]]; then
		echo "gofmt: these files need formatting (run gofmt -w):"
		echo "$bad"
		return 1
	fi
}

run_tests() {
	# shellcheck disable=SC2086 # GOTEST_FLAGS is a list of flags
	go test -race -count=1 -timeout "$TEST_TIMEOUT" ${GOTEST_FLAGS:-} ./...
}

fuzz_targets=0
run_fuzz() {
	local file dir name status=0
	# Every "func FuzzX(f *testing.F)" in a _test.go file: new targets are
	# picked up without editing this script.
	while IFS=: read -r file name; do
		dir=$(dirname "$file")
		name=${name#func }
		name=${name%%(*}
		fuzz_targets=$((fuzz_targets + 1))
		echo "--- fuzz $name in $dir for $FUZZTIME"
		if ! go test -run='^$' -fuzz="^${name}\$" -fuzztime="$FUZZTIME" "./${dir#./}"; then
			echo "FAIL: fuzz $name in $dir"
			status=1
		fi
	done < <(grep -rHoE --include='*_test.go' --exclude-dir=bin --exclude-dir=.git --exclude-dir=testdata \
		'^func Fuzz[A-Za-z0-9_]*\(' . | sort -u)
	return $status
}

# The commit whose proto/ the working tree must stay wire-compatible with:
#   - the newest v* tag reachable from HEAD, when there is one: a release is
#     the contract deployed edges and control planes hold, and changes made
#     since it (not yet released) may still be reworked;
#   - else, on a branch: its merge-base with main, so that every change the
#     branch brings is checked, not only its last commit;
#   - else (on main, which is what CI's clean clone checks out, and there is
#     no release yet): the parent of the last commit that changed a .proto, so
#     the latest protocol change (plus any uncommitted edit) is checked even
#     when later commits did not touch proto/. HEAD~1 would compare nothing
#     then.
# BUF_AGAINST=<git ref> overrides the choice (e.g. the commit a series of
# submitted commits started from).
proto_baseline() {
	local ref
	if [[ -n ${BUF_AGAINST:-} ]]; then
		echo "$BUF_AGAINST"
	elif ref=$(git describe --tags --abbrev=0 --match 'v[0-9]*' HEAD 2>/dev/null); then
		echo "$ref"
	elif [[ $(git rev-parse --abbrev-ref HEAD) != main ]] && git rev-parse -q --verify main >/dev/null &&
		ref=$(git merge-base HEAD main) && [[ $ref != "$(git rev-parse HEAD)" ]]; then
		echo "$ref"
	elif ref=$(git log -1 --format=%H -- ':(glob)proto/**/*.proto') && [[ -n $ref ]] && git rev-parse -q --verify "$ref~1" >/dev/null; then
		echo "$ref~1"
	else
		echo HEAD
	fi
}

# proto/: lint, breaking changes against proto_baseline, and the committed
# generated code must be what buf generates now.
check_proto() {
	local against tmp status=0
	against=$(proto_baseline)
	buf lint || status=1
	echo "buf breaking: against $against ($(git log -1 --format='%h %s' "$against" | cut -c1-80))"
	buf breaking --against ".git#ref=$(git rev-parse "$against")" || { echo "buf breaking: proto changes break $against"; status=1; }
	tmp=$(mktemp -d)
	sed "s#out: proto/gen#out: $tmp#" buf.gen.yaml >"$tmp/buf.gen.yaml"
	if buf generate --template "$tmp/buf.gen.yaml" && diff -r "$tmp" proto/gen --exclude=buf.gen.yaml >/dev/null; then
		:
	else
		echo "proto/gen is stale: run 'bin/tools/buf generate' and commit the result"
		diff -r "$tmp" proto/gen --exclude=buf.gen.yaml | head -20 || true
		status=1
	fi
	rm -rf "$tmp"
	return $status
}

step "gofmt" check_gofmt
step "READMEs: size, zh-CN sections, relative links" test/readme-sections.sh
step "buf lint, breaking, generated code" check_proto
step "go vet ./..." go vet ./...
# --build-tags bench: the benchmark programs (test/bench, test/e2e/*_bench_test.go)
# are linted too; no file is excluded by the tag, so this is a superset.
# --allow-serial-runners: a second golangci-lint on the same machine (another
# checkout's run) waits for the first instead of failing this step.
step "golangci-lint ./... (.golangci.yml: errcheck, staticcheck, revive, import rules)" \
	bin/tools/golangci-lint run --allow-serial-runners --build-tags bench ./...
step "go test -race ./..." run_tests
step "fuzz (${FUZZTIME} per target)" run_fuzz

log "summary"
printf '%s\n' "${SUMMARY[@]}"
if ((failed)); then
	echo "all.sh: FAILED after $(($(date +%s) - START))s"
	exit 1
fi
echo "all.sh: OK — gofmt, vet, lint, race tests and ${fuzz_targets} fuzz targets passed in $(($(date +%s) - START))s"
