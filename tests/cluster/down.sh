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
  stop_components kube-proxy kubelet kube-scheduler kube-controller-manager
  remove_pod_containers
  stop_components kube-apiserver
  stop_components etcd
  unmount_kubelet
  remove_iptables
  if ((PURGE)); then
    log "purging etcd data and kubelet state"
    rm -rf "$CLUSTER_DIR/etcd" "$CLUSTER_DIR/kubelet"
  fi
  log "cluster down"
}

main
