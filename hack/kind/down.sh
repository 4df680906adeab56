#!/usr/bin/env bash
# Delete the kind cluster of hack/kind/up.sh (its node containers and the kubeconfig).
set -euo pipefail
LFT_CACHE=${LFT_CACHE:-/var/cache/lft}
KIND_VERSION=${KIND_VERSION:-v0.33.0}
CLUSTER=${LFT_KIND_CLUSTER:-lft}
kind=${KIND:-$(command -v kind || echo "$LFT_CACHE/kind/${KIND_VERSION#v}/kind")}
"$kind" delete cluster --name "$CLUSTER"
rm -f "${LFT_KIND_KUBECONFIG:-/var/lib/lft/kind/kubeconfig}"
