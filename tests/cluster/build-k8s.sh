#!/usr/bin/env bash
# Build what the local control plane runs, from the Go module proxy, into $LFT_CACHE (a no-op when cached):
# for $K8S_VERSION (default the newest, 1.37.2; or the oldest, 1.34.4) kube-apiserver, kube-controller-manager,
# kubectl, and etcd.
#   [K8S_VERSION=1.34.4] tests/cluster/build-k8s.sh [--api-only]
# --api-only is accepted for compatibility and changes nothing. The kind node image builds its own set
# (hack/kind/node-image.sh). hack/build-from-modules.sh does the work; its header and
# docs/building-current-kubernetes.md explain how (and has cold build times: minutes per minor on 2 cores).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/cluster/lib/common.sh
source "$here/lib/common.sh"

case ${1:-} in
  "" | --api-only) ;;
  -h | --help) sed -n '2,8p' "$0"; exit 0 ;;
  *) die "unknown argument: $1" ;;
esac

need=("${K8S_BINS[@]/#/$(k8s_bin_dir)/}" "$(component_bin etcd)")
missing=0
for b in "${need[@]}"; do [[ -x $b ]] || missing=1; done
((missing)) || exit 0

command -v jq >/dev/null || ensure_debs jq
[[ -x ${GO:-/usr/local/go/bin/go} ]] || die "Go not found at ${GO:-/usr/local/go/bin/go} (set GO=...)"
log "building ${K8S_BINS[*]} and etcd for Kubernetes $K8S_VERSION from the Go module proxy (log: $LFT_STATE/logs/build-k8s-$K8S_VERSION.log)"
mkdir -p "$LFT_STATE/logs"
t0=$SECONDS
# All cores: in CI nothing else runs yet.
if ! LFT_CACHE=$LFT_CACHE K8S_VERSION=v$K8S_VERSION ETCD_VERSION=v$ETCD_VERSION \
  K8S_CMDS="${K8S_BINS[*]}" GOMAXPROCS=$(nproc) GOFLAGS=-p=$(nproc) LFT_NICE="" \
  bash "$here/../../hack/build-from-modules.sh" k8s etcd >"$LFT_STATE/logs/build-k8s-$K8S_VERSION.log" 2>&1; then
  tail -n 40 "$LFT_STATE/logs/build-k8s-$K8S_VERSION.log" >&2
  die "build failed (log: $LFT_STATE/logs/build-k8s-$K8S_VERSION.log)"
fi
log "built Kubernetes $K8S_VERSION set in $((SECONDS - t0)) s"
