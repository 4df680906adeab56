#!/usr/bin/env bash
# Stop the local cluster started by up.sh and remove the pods' containers.
#   tests/cluster/down.sh [--purge]
# --purge also wipes etcd data and kubelet state (certificates are kept).
# Leaves dockerd (hack/docker.sh) and the cached binaries alone.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/cluster/lib/common.sh
source "$here/lib/common.sh"

PURGE=0
for arg in "$@"; do
  case $arg in
    --purge) PURGE=1 ;;
    -h | --help) sed -n '2,5p' "$0"; exit 0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done

# Our processes: pid file first, else any process running that component's
# binary with our state dir on its command line (pid file lost).
pids_of() {
  local name=$1 bin pid exe
  component_pid "$name" || true
  bin=$(component_bin "$name")
  for pid in /proc/[0-9]*; do
    pid=${pid#/proc/}
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || continue
    [[ ${exe% (deleted)} == "$bin" ]] || continue
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$CLUSTER_DIR/" && echo "$pid"
  done | sort -u
}

stop_component() {
  local name=$1 pids pid i
  pids=$(pids_of "$name")
  rm -f "$(pid_file "$name")"
  [[ -n $pids ]] || return 0
  log "stopping $name (pid ${pids//$'\n'/ })"
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for ((i = 0; i < 40; i++)); do
    for pid in $pids; do kill -0 "$pid" 2>/dev/null && break; pid=; done
    [[ -z ${pid:-} ]] && return 0
    sleep 0.5
  done
  log "$name did not stop in 20s: killing"
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
}

remove_pod_containers() {
  local docker ids
  docker=$(command -v docker || true)
  [[ -n $docker ]] && "$docker" info >/dev/null 2>&1 || return 0
  # dockershim names every pod container (and sandbox) k8s_<...>.
  ids=$("$docker" ps -a --format '{{.ID}} {{.Names}}' | awk '$2 ~ /^k8s_/ {print $1}')
  [[ -n $ids ]] || return 0
  log "removing $(wc -w <<<"$ids") pod containers"
  # shellcheck disable=SC2086
  "$docker" rm -f $ids >/dev/null
}

# Secret/token volumes are tmpfs mounts under the kubelet root.
unmount_kubelet() {
  local m
  findmnt -rn -o TARGET | grep -F "$CLUSTER_DIR/kubelet/" | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" || true
  done
}

remove_iptables() {
  if [[ -x $K8S_BIN_DIR/kube-proxy ]] && iptables -w -t nat -S KUBE-SERVICES >/dev/null 2>&1; then
    "$K8S_BIN_DIR/kube-proxy" --cleanup >/dev/null 2>&1 || true
  fi
  while iptables -w -t nat -S OUTPUT | grep -q -- '-j LFT-APISERVER'; do
    iptables -w -t nat -S OUTPUT | grep -- '-j LFT-APISERVER' | head -n1 |
      sed 's/^-A /-D /' | xargs iptables -w -t nat
  done
  iptables -w -t nat -F LFT-APISERVER 2>/dev/null || true
  iptables -w -t nat -X LFT-APISERVER 2>/dev/null || true
}

main() {
  [[ $(id -u) -eq 0 ]] || die "must run as root"
  local i
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    stop_component "${COMPONENTS[i]}"
    [[ ${COMPONENTS[i]} != kubelet ]] || remove_pod_containers
  done
  unmount_kubelet
  remove_iptables
  if ((PURGE)); then
    log "purging etcd data and kubelet state"
    rm -rf "$CLUSTER_DIR/etcd" "$CLUSTER_DIR/kubelet"
  fi
  log "cluster down"
}

main
