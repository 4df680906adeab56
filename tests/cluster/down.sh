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
  local name=$1 bin pid
  bin=$(component_bin "$name")
  {
    component_pid "$name" || true
    find /proc/[0-9]*/exe -maxdepth 0 \( -lname "$bin" -o -lname "$bin (deleted)" \) 2>/dev/null |
      cut -d/ -f3 | while read -r pid; do
        if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$CLUSTER_DIR/"; then echo "$pid"; fi
      done
  } | sort -u
}

# stop NAME...: SIGTERM all of them at once, wait up to 20s, then SIGKILL.
stop() {
  local name pids=() pid i alive
  for name in "$@"; do
    for pid in $(pids_of "$name"); do pids+=("$pid"); log "stopping $name (pid $pid)"; done
    rm -f "$(pid_file "$name")"
  done
  ((${#pids[@]})) || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for ((i = 0; i < 40; i++)); do
    alive=()
    for pid in "${pids[@]}"; do if kill -0 "$pid" 2>/dev/null; then alive+=("$pid"); fi; done
    ((${#alive[@]})) || return 0
    sleep 0.5
  done
  log "pids ${alive[*]} did not stop in 20s: killing"
  kill -KILL "${alive[@]}" 2>/dev/null || true
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
  # The kubelet also bind-mounts its root dir onto itself: unmount deepest first.
  findmnt -rn -o TARGET | { grep -E "^$CLUSTER_DIR/kubelet(/|$)" || true; } | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" || true; done
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
  mkdir -p "$CLUSTER_DIR"
  exec 8>"$CLUSTER_DIR/.lock"
  flock -w 30 8 || log "WARNING: $CLUSTER_DIR/.lock busy for 30s; going on without it"
  # Node side and controllers first (together), then the API server, then etcd.
  stop kube-proxy kubelet kube-scheduler kube-controller-manager
  remove_pod_containers
  stop kube-apiserver
  stop etcd
  unmount_kubelet
  remove_iptables
  if ((PURGE)); then
    log "purging etcd data and kubelet state"
    rm -rf "$CLUSTER_DIR/etcd" "$CLUSTER_DIR/kubelet"
  fi
  log "cluster down"
}

main
