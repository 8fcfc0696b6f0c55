#!/usr/bin/env bash
# run-standalone.sh — the control plane in standalone mode plus one edge
# connected to it, on this machine, in one command:
#
#   control plane  127.0.0.1:9090  gRPC: edge config stream + admin API (grpcurl)
#   edge           127.0.0.1:5000  pull-through registry, cache in ./data
#
# First run: builds bin/controlplane and bin/edge, and creates
# ./data/standalone/ with an admin token, an edge token for the namespace
# `default` (32 random hex characters each, from /dev/urandom, mode 0600)
# and controlplane.yaml (the default upstreams: dockerhub, ghcr, quay, k8s).
# Later runs rebuild the binaries and reuse what is there; changes made
# with grpcurl persist in ./data/standalone/controlplane-state.json.
# Ctrl-C (or SIGTERM) stops both. See docs/control-protocol.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
CP_ADDR=127.0.0.1:9090
EDGE_ADDR=127.0.0.1:5000
DIR=data/standalone
CONFIG=$DIR/controlplane.yaml
ADMIN_TOKEN=$DIR/admin.token
EDGE_TOKEN=$DIR/edge-default.token

echo "run-standalone: building bin/controlplane and bin/edge"
mkdir -p bin
go build -o bin/controlplane ./controlplane/cmd/controlplane
go build -o bin/edge ./edge/cmd/edge

# Secrets are created once and never overwritten: a rerun keeps the tokens
# an operator may already have copied.
# umask only for these files: the edge's cache keeps the usual modes.
mkdir -p data
old_umask=$(umask)
umask 077
mkdir -p "$DIR"
new_token() { # new_token FILE: 32 hex characters from /dev/urandom
	[[ -s $1 ]] && return
	od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$1"
	echo >>"$1"
	chmod 600 "$1"
	echo "run-standalone: created $1"
}
new_token "$ADMIN_TOKEN"
new_token "$EDGE_TOKEN"
if [[ ! -s $CONFIG ]]; then
	cat >"$CONFIG" <<'YAML'
# Standalone control plane configuration, created by run-standalone.sh.
# Format: docs/control-protocol.md, "7. Standalone configuration and persistence". Token files are relative to this file.
adminTokenFile: admin.token
# No "upstreams:" list: the defaults dockerhub, ghcr, quay (alias quayio)
# and k8s. Add or change upstreams at runtime with grpcurl (PutUpstream).
namespaces:
  default:
    edgeTokenFile: edge-default.token
    edgeAddress: "127.0.0.1:5000"
YAML
	chmod 600 "$CONFIG"
	echo "run-standalone: created $CONFIG"
fi
umask "$old_umask"

pids=()
# shellcheck disable=SC2317 # called by the traps
stop() {
	trap - INT TERM EXIT
	if ((${#pids[@]} > 0)); then
		echo "run-standalone: stopping the edge and the control plane"
		kill -TERM "${pids[@]}" 2>/dev/null || true
		wait "${pids[@]}" 2>/dev/null || true
	fi
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap stop EXIT

# wait_port ADDR PID NAME: until ADDR accepts connections, or PID exited.
wait_port() {
	local host=${1%:*} port=${1##*:} i
	for ((i = 0; i < 150; i++)); do
		if ! kill -0 "$2" 2>/dev/null; then
			echo "run-standalone: $3 exited; is $1 already in use?" >&2
			return 1
		fi
		if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	echo "run-standalone: $3 is not listening on $1 after 15 s" >&2
	return 1
}

./bin/controlplane --standalone --config "$CONFIG" --state-dir "$DIR" --grpc-listen "$CP_ADDR" \
	2>>"$DIR/controlplane.log" &
pids+=($!)
wait_port "$CP_ADDR" "${pids[0]}" "the control plane (log: $DIR/controlplane.log)" || {
	tail -n 20 "$DIR/controlplane.log" >&2
	exit 1
}

./bin/edge --listen "$EDGE_ADDR" --storage ./data --namespace default \
	--control-plane "$CP_ADDR" --control-plane-token-file "$EDGE_TOKEN" \
	--advertise-address "$EDGE_ADDR" &
pids+=($!)
wait_port "$EDGE_ADDR" "${pids[1]}" "the edge" || exit 1

GRPCURL=grpcurl
command -v grpcurl >/dev/null 2>&1 || GRPCURL=bin/tools/grpcurl
cat <<EOF

run-standalone: control plane on $CP_ADDR (log: $DIR/controlplane.log), edge on $EDGE_ADDR (log below)

Pull through the edge:
  curl -sI http://$EDGE_ADDR/v2/dockerhub/library/busybox/manifests/latest
  crane pull $EDGE_ADDR/dockerhub/library/busybox:latest busybox.tar
  curl -s http://$EDGE_ADDR/readyz

The admin API, with grpcurl (test/all.sh builds it into bin/tools; or
  (cd tools && go build -o ../bin/tools/ github.com/fullstorydev/grpcurl/cmd/grpcurl)):
  $GRPCURL -plaintext -H "authorization: Bearer \$(cat $ADMIN_TOKEN)" $CP_ADDR list
  $GRPCURL -plaintext -H "authorization: Bearer \$(cat $ADMIN_TOKEN)" $CP_ADDR describe selfhost.v1.AdminService
  $GRPCURL -plaintext -H "authorization: Bearer \$(cat $ADMIN_TOKEN)" $CP_ADDR selfhost.v1.AdminService/ListEdges
  $GRPCURL -plaintext -H "authorization: Bearer \$(cat $ADMIN_TOKEN)" -d '{"namespace":"default","image":"nginx"}' \\
      $CP_ADDR selfhost.v1.AdminService/Resolve

Ctrl-C stops both.
EOF

# Either process ending ends the run; the EXIT trap stops the other. (A
# Ctrl-C in the terminal reaches the two processes too, and they stop
# cleanly with status 0.)
status=0
wait -n "${pids[@]}" || status=$?
names=(control-plane edge)
for i in 0 1; do
	kill -0 "${pids[$i]}" 2>/dev/null || echo "run-standalone: the ${names[$i]} exited (status $status)" >&2
done
exit "$status"
