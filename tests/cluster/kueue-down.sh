#!/usr/bin/env bash
# Stop the Kueue started by kueue-up.sh and remove its webhook configurations, so that a stopped Kueue
# never blocks Job creation.
#   tests/cluster/kueue-down.sh [--purge]
# The CRDs and Kueue's objects stay (kueue-up.sh reuses them). Workloads keep Kueue's finalizer
# (kueue.x-k8s.io/resource-in-use) and no controller would remove it: it is removed here, so that
# deleting their Jobs and namespaces does not hang. --purge also deletes the CRDs (and every Kueue object).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/cluster/lib/common.sh
source "$here/lib/common.sh"
# shellcheck source=tests/cluster/lib/kueue.sh
source "$here/lib/kueue.sh"

PURGE=0
for arg in "$@"; do
  case $arg in
    --purge) PURGE=1 ;;
    -h | --help) sed -n '2,7p' "$0"; exit 0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done

KUBECTL=$TOOLS_BIN_DIR/kubectl
kc() { "$KUBECTL" --kubeconfig "$KUEUE_KUBECONFIG" --request-timeout=20s "$@"; }

api_up=0
[[ -f $KUEUE_KUBECONFIG ]] && kc get --raw /readyz >/dev/null 2>&1 && api_up=1
# The webhooks first: from here on no Job create waits for Kueue.
if ((api_up)); then
  kc delete --ignore-not-found "${KUEUE_WEBHOOK_CONFIGS[@]}" >/dev/null
fi
stop_kueue
((api_up)) || { log "the API server does not answer: Kueue stopped, nothing removed from the cluster"; exit 0; }

if kc get crd workloads.kueue.x-k8s.io >/dev/null 2>&1; then
  kc get workloads.v1beta2.kueue.x-k8s.io -A --no-headers \
    -o custom-columns=NS:.metadata.namespace,NAME:.metadata.name,F:.metadata.finalizers 2>/dev/null |
    while read -r ns name finalizers; do
      [[ $finalizers == *kueue.x-k8s.io/resource-in-use* ]] || continue
      kc -n "$ns" patch workloads.v1beta2.kueue.x-k8s.io "$name" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null || true
    done
fi
if ((PURGE)); then
  log "deleting Kueue's CRDs (and every Kueue object)"
  kc get crd -o name | { grep '\.kueue\.x-k8s\.io$' || true; } | xargs -r "$KUBECTL" --kubeconfig "$KUEUE_KUBECONFIG" delete --wait=false >/dev/null
fi
log "Kueue is down"
