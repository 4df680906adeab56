#!/usr/bin/env bash
# Stop components of the local cluster (or Docker) and bring them back: fault injection for the
# end-to-end scenarios, and a quick way to restart one component by hand.
#   tests/cluster/restart.sh [--down SECONDS] COMPONENT...
# COMPONENT: etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy containerd,
#   or the groups "control-plane" (etcd + kube-apiserver) and "node" (kubelet + containerd).
# Stops them as down.sh does (SIGTERM, SIGKILL after 20 s; containerd: its shims and every container
# are killed too, pods included, as when a node crashes), waits SECONDS (default 0), then starts them
# again with tests/cluster/up.sh (full mode if the kubelet was running, else --api-only),
# which wait until they are ready. Last stdout line: `stopped=<s> down=<s> started=<s>` (seconds
# spent stopping, down, and starting until ready).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/cluster/lib/common.sh
source "$here/lib/common.sh"

DOWN=0
names=()
while (($#)); do
  case $1 in
    --down) DOWN=$2; shift ;;
    --down=*) DOWN=${1#--down=} ;;
    -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
    control-plane) names+=(etcd kube-apiserver) ;;
    node) names+=(kubelet containerd) ;;
    containerd | etcd | kube-apiserver | kube-controller-manager | kube-scheduler | kubelet | kube-proxy) names+=("$1") ;;
    *) die "unknown component: $1 (see --help)" ;;
  esac
  shift
done
((${#names[@]})) || die "no component named (see --help)"
[[ $DOWN =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--down wants seconds, got: $DOWN"
[[ $(id -u) -eq 0 ]] || die "must run as root"

wants() { [[ " ${names[*]} " == *" $1 "* ]]; }

main() {
  local mode=(--api-only) t0 t1 t2 t3 k8s=()
  if is_running kubelet || wants kubelet; then mode=(); fi
  for n in "${COMPONENTS[@]}"; do if wants "$n"; then k8s+=("$n"); fi; done

  t0=$(date +%s.%N)
  # Like up.sh/down.sh: take turns on the cluster's lock while stopping (released before up.sh takes it).
  exec 8>"$CLUSTER_DIR/.lock"
  flock -w 120 8 || die "another up.sh/down.sh holds $CLUSTER_DIR/.lock"
  # Node agents before the runtime, then the control plane from the top (as down.sh).
  local order=() n
  for n in kube-proxy kubelet kube-scheduler kube-controller-manager; do
    if wants "$n"; then order+=("$n"); fi
  done
  ((${#order[@]} == 0)) || stop_components "${order[@]}"
  if wants containerd; then stop_components containerd; kill_shims; fi
  if wants kube-apiserver; then stop_components kube-apiserver; fi
  if wants etcd; then stop_components etcd; fi
  flock -u 8
  exec 8>&-
  t1=$(date +%s.%N)

  sleep "$DOWN"
  t2=$(date +%s.%N)
  if ((${#k8s[@]})); then "$here/up.sh" "${mode[@]}" >/dev/null; fi
  t3=$(date +%s.%N)
  log "restarted ${names[*]}"
  awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" \
    'BEGIN { printf "stopped=%.1f down=%.1f started=%.1f\n", b - a, c - b, d - c }'
}

main
