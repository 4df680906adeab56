#!/usr/bin/env bash
# Build what the local cluster runs, from the Go module proxy, into $LFT_CACHE (a no-op when cached):
#   K8S_VERSION=<newest, default>  kube-apiserver, -controller-manager, -scheduler, kubelet, kube-proxy,
#                                  kubectl, etcd, containerd (+ shim, ctr), CNI plugins, crictl
#   K8S_VERSION=<oldest>           kube-apiserver, kube-controller-manager, etcd (API-level suite only)
# hack/build-from-modules.sh does the work; its header and docs/building-current-kubernetes.md explain how.
# Cold on a 2-core machine: ~10-15 min for the newest set, ~5 min more for the oldest minor.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/cluster/lib/common.sh
source "$here/lib/common.sh"

API_ONLY=0
[[ ${1:-} == --api-only ]] && API_ONLY=1

need=("${K8S_API_BINS[@]/#/$(k8s_bin_dir)/}" "$(component_bin etcd)")
comps=(k8s etcd)
if [[ $K8S_VERSION != "$K8S_OLDEST_VERSION" ]]; then
  need=("${K8S_BINS[@]/#/$(k8s_bin_dir)/}" "$(component_bin etcd)")
  if ((!API_ONLY)); then
    need+=("$(component_bin containerd)" "$CONTAINERD_BIN_DIR/containerd-shim-runc-v2" "$CNI_BIN_DIR/bridge" "$CRICTL")
    comps+=(containerd cni crictl)
  fi
fi
missing=0
for b in "${need[@]}"; do [[ -x $b ]] || missing=1; done
((missing)) || exit 0

command -v jq >/dev/null || ensure_debs jq
[[ -x ${GO:-/usr/local/go/bin/go} ]] || die "Go not found at ${GO:-/usr/local/go/bin/go} (set GO=...)"
cmds=("${K8S_BINS[@]}")
[[ $K8S_VERSION == "$K8S_OLDEST_VERSION" ]] && cmds=("${K8S_API_BINS[@]}")
log "building ${comps[*]} for Kubernetes $K8S_VERSION from the Go module proxy (log: $LFT_STATE/logs/build-k8s-$K8S_VERSION.log)"
mkdir -p "$LFT_STATE/logs"
t0=$SECONDS
# All cores: in CI nothing else runs yet.
if ! LFT_CACHE=$LFT_CACHE K8S_VERSION=v$K8S_VERSION ETCD_VERSION=v$ETCD_VERSION \
  CONTAINERD_VERSION=v$CONTAINERD_VERSION CNI_PLUGINS_VERSION=v$CNI_PLUGINS_VERSION CRICTL_VERSION=v$CRICTL_VERSION \
  K8S_CMDS="${cmds[*]}" GOMAXPROCS=$(nproc) GOFLAGS=-p=$(nproc) LFT_NICE="" \
  bash "$here/../../hack/build-from-modules.sh" "${comps[@]}" >"$LFT_STATE/logs/build-k8s-$K8S_VERSION.log" 2>&1; then
  tail -n 40 "$LFT_STATE/logs/build-k8s-$K8S_VERSION.log" >&2
  die "build failed (log: $LFT_STATE/logs/build-k8s-$K8S_VERSION.log)"
fi
log "built Kubernetes $K8S_VERSION set in $((SECONDS - t0)) s"
