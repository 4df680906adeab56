#!/usr/bin/env bash
# Install/upgrade the operator into the local cluster with the Helm chart, pointed at the locally
# built images (pull policy Never: there is no registry) and the local S3 server (hack/s3.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${LFT_BIN:-/var/cache/lft/bin}
export KUBECONFIG=${KUBECONFIG:-/var/lib/lft/cluster/kubeconfig}
RELEASE=lora-finetune-operator
NS=lft-system
eval "$(bash hack/s3.sh env)"
DEMO_NS=${LFT_DEMO_NAMESPACE:-default}
SECRET=s3-credentials

# The credentials Secret the example uses (moto accepts any key; a real S3 wants real ones).
"$BIN/kubectl" create secret generic "$SECRET" -n "$DEMO_NS" \
  --from-literal=AWS_ACCESS_KEY_ID=demo --from-literal=AWS_SECRET_ACCESS_KEY=demo-secret \
  --dry-run=client -o yaml | "$BIN/kubectl" apply -f - >/dev/null

# The CRD in the cluster may have been written since by another client (the integration tests of
# another checkout apply theirs with a plain update): Helm's server-side apply of crds/ then fails
# with a conflict on .spec.versions. Take the fields back under Helm's field manager first.
if "$BIN/kubectl" get crd lorafinetunes.finetune.dev >/dev/null 2>&1; then
  "$BIN/kubectl" apply --server-side --force-conflicts --field-manager=helm \
    -f charts/lora-finetune-operator/crds/ >/dev/null
fi

# LFT_WATCH_NAMESPACES=a,b limits the operator to those namespaces (default: all).
watch=()
[ -n "${LFT_WATCH_NAMESPACES:-}" ] && watch=(--set "watchNamespaces={$LFT_WATCH_NAMESPACES}")
# LFT_KUEUE=1: the operator's Kueue integration (Kueue installed: tests/cluster/kueue-up.sh); else off.
kueue=(--set kueue.enabled=false)
[ "${LFT_KUEUE:-0}" = 1 ] && kueue=(--set kueue.enabled=true)
# The chart's default policy is closed; it allows one more credentials Secret here, the MLflow one of the
# e2e tracking scenario (tests/e2e/test_tracking.py).
# The chart's default images are the ones `make images` builds (lft/operator:dev, lft/trainer:cpu);
# pull policy Never: with no registry, a missing image fails at once (ErrImageNeverPull).
"$BIN/helm" upgrade --install "$RELEASE" charts/lora-finetune-operator -n "$NS" --create-namespace "${watch[@]}" "${kueue[@]}" \
  --set image.pullPolicy=Never --set trainer.pullPolicy=Never \
  --set storage.endpoint="$LFT_S3_ENDPOINT" --set storage.secretName="$SECRET" \
  --set "policy.allowedStorageSecrets={mlflow-credentials}" \
  --wait --timeout 180s
# The operator's pods pass Pod Security "restricted", as the trainer pods do: enforce it on its namespace.
"$BIN/kubectl" label namespace "$NS" --overwrite \
  pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/enforce-version=latest >/dev/null
# A new image under the same tag needs a new pod: restart when the image ID changed.
want=$(docker image inspect -f '{{.Id}}' lft/operator:dev)
have=$("$BIN/kubectl" get pods -n "$NS" -l app.kubernetes.io/name=$RELEASE \
  -o jsonpath='{.items[0].status.containerStatuses[0].imageID}' 2>/dev/null || true)
if [ -n "$have" ] && [[ "$have" != *"${want#sha256:}"* ]]; then
  "$BIN/kubectl" rollout restart deploy/$RELEASE -n "$NS"
fi
"$BIN/kubectl" rollout status deploy/$RELEASE -n "$NS" --timeout=180s
echo "operator deployed: helm -n $NS status $RELEASE"
