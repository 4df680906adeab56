#!/usr/bin/env bash
# A kind cluster of one control plane and two workers (hack/kind/cluster.yaml) on the node image that
# hack/kind/node-image.sh builds offline; LFT_KIND_NODE_IMAGE=kindest/node:<tag> uses an official one
# instead (a machine with registry access). Writes the kubeconfig to $LFT_KIND_KUBECONFIG.
# - Each worker keeps its image store in a host folder, $LFT_CACHE/kind/image-store/<cluster>-<node image id>/,
#   seeded from the node image once: what a cluster pulled or loaded is there for the next one.
# - The workers' containerd pulls 127.0.0.1:<port> (the local release registry, hack/registry.sh) from its
#   read-only instance on the Docker bridge, the host as the nodes reach it (certs.d/.../hosts.toml).
# - An existing cluster whose API server does not answer (Docker was restarted under it) is deleted and made anew.
#
# Usage: hack/kind/up.sh        env: LFT_KIND_CLUSTER [lft], LFT_KIND_KUBECONFIG [/var/lib/lft/kind/kubeconfig],
#                                    LFT_REGISTRY_PORT [5000]
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
kubectl=${KUBECTL:-$LFT_CACHE/k8s/${K8S_VERSION#v}/kubectl}
state=$(dirname "$KUBECONFIG_OUT")
mkdir -p "$state"
if "$kind" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  "$kind" get kubeconfig --name "$CLUSTER" >"$KUBECONFIG_OUT" 2>/dev/null || true
  if timeout 30 "$kubectl" --kubeconfig "$KUBECONFIG_OUT" get --raw /readyz >/dev/null 2>&1; then
    log "cluster $CLUSTER exists"
  else
    log "cluster $CLUSTER exists but its API server does not answer: deleting it"
    bash "$here/down.sh"
  fi
fi
if ! "$kind" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  # The image stores, keyed by the node image (its preloaded images and containerd version); older keys removed.
  node_image_id=$(docker image inspect -f '{{.Id}}' "$LFT_KIND_NODE_IMAGE" 2>/dev/null || true)
  node_image_id=${node_image_id#sha256:}
  store_root=$LFT_CACHE/kind/image-store
  store=$store_root/$CLUSTER-${node_image_id:0:12}
  if [[ -z $node_image_id ]]; then
    store=""  # an official image kind pulls itself: nothing to seed from yet, so no kept store
  elif [[ ! -f $store/.seeded ]]; then
    t=$SECONDS
    rm -rf "$store_root/$CLUSTER"-*
    mkdir -p "$store/worker" "$store/worker2"
    docker run --rm --entrypoint bash -v "$store:/store" "$LFT_KIND_NODE_IMAGE" -c \
      'cp -a /var/lib/containerd/. /store/worker/ && cp -a /var/lib/containerd/. /store/worker2/'
    touch "$store/.seeded"
    log "seeded the workers' image stores from $LFT_KIND_NODE_IMAGE in $((SECONDS - t)) s ($store)"
  fi
  registry=127.0.0.1:${LFT_REGISTRY_PORT:-5000}
  bridge=$(bash "$here/../bridge-ip.sh")
  certs_d=$state/certs.d
  rm -rf "$certs_d"
  mkdir -p "$certs_d/$registry"
  printf '%s\n' "server = \"http://$registry\"" "" "[host.\"http://$bridge:${registry##*:}\"]" \
    "  capabilities = [\"pull\", \"resolve\"]" >"$certs_d/$registry/hosts.toml"
  config=$state/cluster.yaml
  sed -e "s|@IMAGE_STORE@|$store|g" -e "s|@CERTS_D@|$certs_d|g" "$here/cluster.yaml" >"$config"
  if [[ -z $store ]]; then  # no kept store: drop those mounts
    grep -v 'containerPath: /var/lib/containerd' "$config" >"$config.tmp" && mv "$config.tmp" "$config"
  fi
  t=$SECONDS
  "$kind" create cluster --name "$CLUSTER" --image "$LFT_KIND_NODE_IMAGE" --config "$config" \
    --kubeconfig "$KUBECONFIG_OUT" --wait 300s
  log "kind create cluster took $((SECONDS - t)) s"
fi
"$kind" get kubeconfig --name "$CLUSTER" >"$KUBECONFIG_OUT"
"$kubectl" --kubeconfig "$KUBECONFIG_OUT" wait --for=condition=Ready nodes --all --timeout=300s >&2
"$kubectl" --kubeconfig "$KUBECONFIG_OUT" get nodes -o wide >&2
log "up in $((SECONDS - start)) s; KUBECONFIG=$KUBECONFIG_OUT"
