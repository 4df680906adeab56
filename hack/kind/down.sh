#!/usr/bin/env bash
# Delete the kind cluster of hack/kind/up.sh (its node containers and the kubeconfig). The workers' pods are
# removed first, so that their kept image stores (hack/kind/up.sh) hold images and no dead containers.
set -euo pipefail
LFT_CACHE=${LFT_CACHE:-/var/cache/lft}
KIND_VERSION=${KIND_VERSION:-v0.33.0}
CLUSTER=${LFT_KIND_CLUSTER:-lft}
kind=${KIND:-$(command -v kind || echo "$LFT_CACHE/kind/${KIND_VERSION#v}/kind")}
for node in $("$kind" get nodes --name "$CLUSTER" 2>/dev/null | grep -- '-worker' || true); do
  [[ $(docker inspect -f '{{.State.Running}}' "$node" 2>/dev/null) == true ]] || continue
  timeout 60 docker exec "$node" crictl rmp --all --force >/dev/null 2>&1 || echo "kind-down: $node: pods not removed" >&2
done
"$kind" delete cluster --name "$CLUSTER"
rm -f "${LFT_KIND_KUBECONFIG:-/var/lib/lft/kind/kubeconfig}"
