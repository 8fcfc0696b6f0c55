# shellcheck shell=bash
# Sourced by the benchmark scripts: apt_install_missing NAME BIN:PKG...
# installs the Debian packages whose binary is missing, with their services
# kept from starting (the benchmarks start their own servers on their own
# ports); an apt failure ends the calling script.
apt_install_missing() {
	local name=$1 pair status=0 policy_added=0
	shift
	local missing=() sudo=()
	for pair in "$@"; do
		command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
	done
	((${#missing[@]} > 0)) || return 0
	[[ $(id -u) -eq 0 ]] || sudo=(sudo)
	echo "$name: installing ${missing[*]}"
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
		"${sudo[@]}" chmod 755 /usr/sbin/policy-rc.d
		policy_added=1
	fi
	{ "${sudo[@]}" apt-get update && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y --no-install-recommends "${missing[@]}"; } || status=$?
	((policy_added)) && "${sudo[@]}" rm -f /usr/sbin/policy-rc.d
	((status == 0)) || { echo "$name: apt-get failed (exit $status)" >&2; exit "$status"; }
}
