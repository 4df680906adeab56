#!/usr/bin/env bash
# Stop the local control plane started by up.sh (and Kueue, if kueue-up.sh started it).
#   tests/cluster/down.sh [--purge]
# --purge also wipes etcd data (certificates are kept).
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

# up.sh's 127.0.0.1:6443 -> NODE_IP:6443 DNAT (chain LFT-APISERVER in nat OUTPUT).
remove_loopback_dnat() {
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
  # The binaries of the version that runs (up.sh records it).
  local running
  running=$(running_k8s_version)
  [[ -z $running ]] || K8S_VERSION=$running
  # Kueue (kueue-up.sh) first, while the API server can still drop its webhook configurations.
  if [[ -f $RUN_DIR/kueue.pid ]]; then bash "$here/kueue-down.sh" || log "WARNING: kueue-down.sh failed"; fi
  # The controller manager, then the API server, then etcd.
  stop_components kube-controller-manager
  stop_components kube-apiserver
  stop_components etcd
  remove_loopback_dnat
  if ((PURGE)); then
    log "purging etcd data"
    rm -rf "$CLUSTER_DIR/etcd" "$RUN_DIR/k8s-version"
  fi
  log "control plane down"
}

main
