#!/usr/bin/env bash
# Remove the operator that hack/deploy.sh installed, and wait until its pod is gone. The integration
# tests run their own operator processes: an in-cluster operator left by an earlier `make deploy`
# (its Deployment survives a cluster restart in etcd) would handle the same resources.
set -uo pipefail
BIN=${LFT_BIN:-/var/cache/lft/bin}
export KUBECONFIG=${KUBECONFIG:-/var/lib/lft/cluster/kubeconfig}
"$BIN/helm" uninstall lora-finetune-operator -n lft-system --wait >/dev/null 2>&1 || true
"$BIN/kubectl" wait --for=delete pod -n lft-system -l app.kubernetes.io/name=lora-finetune-operator \
  --timeout=120s >/dev/null 2>&1 || true
