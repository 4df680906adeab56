#!/usr/bin/env bash
# A kind cluster of one control plane and two workers (hack/kind/cluster.yaml) on the node image that
# hack/kind/node-image.sh builds offline; LFT_KIND_NODE_IMAGE=kindest/node:<tag> uses an official one
# instead (a machine with registry access). Writes the kubeconfig to $LFT_KIND_KUBECONFIG.
#
# Usage: hack/kind/up.sh        env: LFT_KIND_CLUSTER [lft], LFT_KIND_KUBECONFIG [/var/lib/lft/kind/kubeconfig]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export LFT_CACHE=${LFT_CACHE:-/var/cache/lft}
export K8S_VERSION=${K8S_VERSION:-v1.37.2} KIND_VERSION=${KIND_VERSION:-v0.33.0}
CLUSTER=${LFT_KIND_CLUSTER:-lft}
KUBECONFIG_OUT=${LFT_KIND_KUBECONFIG:-/var/lib/lft/kind/kubeconfig}
log() { echo "[kind-up $(date -u +%H:%M:%S)] $*" >&2; }
start=$SECONDS
if [[ -z ${LFT_KIND_NODE_IMAGE:-} ]]; then
  bash "$here/node-image.sh"
  export LFT_KIND_NODE_IMAGE=lft/kind-node:$K8S_VERSION
fi
kind=${KIND:-$(command -v kind || echo "$LFT_CACHE/kind/${KIND_VERSION#v}/kind")}
mkdir -p "$(dirname "$KUBECONFIG_OUT")"
if "$kind" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "cluster $CLUSTER exists"
else
  t=$SECONDS
  "$kind" create cluster --name "$CLUSTER" --image "$LFT_KIND_NODE_IMAGE" --config "$here/cluster.yaml" \
    --kubeconfig "$KUBECONFIG_OUT" --wait 300s
  log "kind create cluster took $((SECONDS - t)) s"
fi
"$kind" get kubeconfig --name "$CLUSTER" >"$KUBECONFIG_OUT"
kubectl=${KUBECTL:-$LFT_CACHE/k8s/${K8S_VERSION#v}/kubectl}
"$kubectl" --kubeconfig "$KUBECONFIG_OUT" wait --for=condition=Ready nodes --all --timeout=300s >&2
"$kubectl" --kubeconfig "$KUBECONFIG_OUT" get nodes -o wide >&2
log "up in $((SECONDS - start)) s; KUBECONFIG=$KUBECONFIG_OUT"
