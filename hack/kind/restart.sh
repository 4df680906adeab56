#!/usr/bin/env bash
# Fault injection on the kind cluster of hack/kind/up.sh (the end-to-end fault scenarios, tests/support/faults.py):
#   hack/kind/restart.sh [--down SECONDS] control-plane   etcd and kube-apiserver of the control-plane node stop
#                                                         (its kubelet first, so nothing restarts them), stay down
#                                                         SECONDS, and come back; done when /readyz answers.
#   hack/kind/restart.sh [--down SECONDS] node NODE       NODE's kubelet and containerd stop, every container on it
#                                                         killed with its shim (a node crash: its pods die); done
#                                                         when the kubelet answers its health check again.
# Last stdout line: `stopped=<s> down=<s> started=<s>` (seconds spent stopping, down, and starting until ready).
set -euo pipefail
CLUSTER=${LFT_KIND_CLUSTER:-lft}
KUBECONFIG=${LFT_KIND_KUBECONFIG:-${KUBECONFIG:-/var/lib/lft/kind/kubeconfig}}
KUBECTL=${LFT_KUBECTL:-/var/cache/lft/bin/kubectl}
DOWN=0
[[ ${1:-} == --down ]] && { DOWN=$2; shift 2; }
[[ $DOWN =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "--down wants seconds, got: $DOWN" >&2; exit 2; }
now() { date +%s.%N; }
wait_until() {  # wait_until WHAT SECONDS command...: poll every 0.5 s
  local what=$1 limit=$2 i; shift 2
  for ((i = 0; i < limit * 2; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "$what not back in $limit s" >&2; return 1
}

case ${1:-} in
  control-plane)
    node=$CLUSTER-control-plane
    t0=$(now)
    docker exec "$node" systemctl stop kubelet
    docker exec "$node" bash -c 'ids=$(crictl ps -q --name "^(kube-apiserver|etcd)$"); [ -n "$ids" ] && crictl stop --timeout 20 $ids' >/dev/null
    t1=$(now); sleep "$DOWN"; t2=$(now)
    docker exec "$node" systemctl start kubelet
    wait_until "the API server" 180 "$KUBECTL" --kubeconfig "$KUBECONFIG" get --raw /readyz
    ;;
  node)
    node=${2:?node NODE}
    t0=$(now)
    # The pods' processes (their scopes under kubepods.slice), then containerd and its shims (its own unit).
    docker exec "$node" bash -c 'systemctl stop kubelet
      systemctl kill --signal=KILL kubepods.slice || true
      systemctl kill --signal=KILL containerd; systemctl stop containerd || true'
    t1=$(now); sleep "$DOWN"; t2=$(now)
    docker exec "$node" systemctl start containerd kubelet
    wait_until "the kubelet of $node" 180 docker exec "$node" curl -sf http://127.0.0.1:10248/healthz
    ;;
  *) sed -n '2,10p' "$0"; exit 2 ;;
esac
echo "restarted ${*}" >&2
awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$(now)" \
  'BEGIN { printf "stopped=%.1f down=%.1f started=%.1f\n", b - a, c - b, d - c }'
