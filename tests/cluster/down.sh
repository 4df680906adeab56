#!/usr/bin/env bash
# Stop the local cluster started by up.sh and remove the pods (sandboxes and containers).
#   tests/cluster/down.sh [--purge]
# --purge also wipes etcd data, kubelet and CNI state (certificates, and images in containerd, are kept).
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

# Through the CRI, so the CNI plugin releases the pods' addresses; then any shim left (containerd was
# killed before, say) goes too: pods outlive containerd by design.
remove_pods() {
  local n
  if [[ -S $CONTAINERD_SOCK ]] && crictl info >/dev/null 2>&1; then
    n=$(crictl pods -q 2>/dev/null | wc -l)
    if ((n)); then
      log "removing $n pods"
      crictl rmp -fa >/dev/null 2>&1 || true
    fi
  fi
  kill_shims
}

# Secret/token volumes are tmpfs mounts under the kubelet root; containerd's rootfs and shm mounts
# live under its state dir.
unmount_kubelet() {
  local m
  # The kubelet also bind-mounts its root dir onto itself: unmount deepest first.
  findmnt -rn -o TARGET | { grep -E "^($CLUSTER_DIR/kubelet|$CONTAINERD_STATE)(/|$)" || true; } | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" || true; done
}

remove_iptables() {
  if [[ -x $(k8s_bin_dir)/kube-proxy ]] && iptables -w -t nat -S KUBE-SERVICES >/dev/null 2>&1; then
    "$(k8s_bin_dir)/kube-proxy" --cleanup >/dev/null 2>&1 || true
  fi
  while iptables -w -t nat -S OUTPUT | grep -q -- '-j LFT-APISERVER'; do
    iptables -w -t nat -S OUTPUT | grep -- '-j LFT-APISERVER' | head -n1 |
      sed 's/^-A /-D /' | xargs iptables -w -t nat
  done
  while iptables -w -D FORWARD -i "$CNI_BRIDGE" -o "$CNI_BRIDGE" -j ACCEPT 2>/dev/null; do :; done
  iptables -w -t nat -F LFT-APISERVER 2>/dev/null || true
  iptables -w -t nat -X LFT-APISERVER 2>/dev/null || true
}

main() {
  [[ $(id -u) -eq 0 ]] || die "must run as root"
  mkdir -p "$CLUSTER_DIR"
  exec 8>"$CLUSTER_DIR/.lock"
  flock -w 30 8 || log "WARNING: $CLUSTER_DIR/.lock busy for 30s; going on without it"
  # The binaries of the version that runs (up.sh records it).
  local running
  running=$(running_k8s_version)
  [[ -z $running ]] || K8S_VERSION=$running
  # Kueue (kueue-up.sh) first, while the API server can still drop its webhook configurations.
  if [[ -f $RUN_DIR/kueue.pid ]]; then bash "$here/kueue-down.sh" || log "WARNING: kueue-down.sh failed"; fi
  # Node side and controllers first (together), the pods, the runtime, then the API server, then etcd.
  stop_components kube-proxy kubelet kube-scheduler kube-controller-manager
  remove_pods
  stop_components containerd
  stop_components kube-apiserver
  stop_components etcd
  unmount_kubelet
  remove_iptables
  if ((PURGE)); then
    log "purging etcd data, kubelet and CNI state"
    rm -rf "$CLUSTER_DIR/etcd" "$CLUSTER_DIR/kubelet" "$CLUSTER_DIR/cni-ipam" "$RUN_DIR/k8s-version"
  fi
  log "cluster down"
}

main
