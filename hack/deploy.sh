#!/usr/bin/env bash
# Install/upgrade the operator into the kind cluster (make cluster-up) with the Helm chart and the local S3 server (hack/s3.sh):
# - by default the chart of this checkout, pointed at the images `make images` built and loaded onto the
#   workers (pull policy Never);
# - with LFT_CHART=oci://REGISTRY/charts/lora-finetune-operator LFT_CHART_VERSION=X, the released chart as a
#   user installs it (`make release` pushed it and its images), its images pulled from that registry.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${LFT_BIN:-/var/cache/lft/bin}
export KUBECONFIG=${KUBECONFIG:-/var/lib/lft/kind/kubeconfig}  # the kind cluster (hack/kind/up.sh)
RELEASE=lora-finetune-operator
NS=lft-system
eval "$(bash hack/s3.sh env)"
DEMO_NS=${LFT_DEMO_NAMESPACE:-default}
SECRET=s3-credentials

# The credentials Secret the example uses (moto accepts any key; a real S3 wants real ones).
"$BIN/kubectl" create secret generic "$SECRET" -n "$DEMO_NS" \
  --from-literal=AWS_ACCESS_KEY_ID=demo --from-literal=AWS_SECRET_ACCESS_KEY=demo-secret \
  --dry-run=client -o yaml | "$BIN/kubectl" apply -f - >/dev/null

# LFT_WATCH_NAMESPACES=a,b limits the operator to those namespaces (default: all).
watch=()
[ -n "${LFT_WATCH_NAMESPACES:-}" ] && watch=(--set "watchNamespaces={$LFT_WATCH_NAMESPACES}")
# LFT_KUEUE=1: the operator's Kueue integration (Kueue installed: tests/cluster/kueue-up.sh); else off.
kueue=(--set kueue.enabled=false)
[ "${LFT_KUEUE:-0}" = 1 ] && kueue=(--set kueue.enabled=true)
if [ -n "${LFT_CHART:-}" ]; then
  # The released chart names its own images (in the registry it came from); IfNotPresent pulls them.
  chart=("$LFT_CHART" --version "${LFT_CHART_VERSION:?LFT_CHART_VERSION with LFT_CHART}")
  [[ $LFT_CHART == oci://127.0.0.1:* || $LFT_CHART == oci://localhost:* ]] && chart+=(--plain-http)
else
  # The chart's default images are the ones `make images` builds (lft/operator:dev, lft/trainer:cpu);
  # pull policy Never: with no registry, a missing image fails at once (ErrImageNeverPull).
  chart=(charts/lora-finetune-operator --set image.pullPolicy=Never --set trainer.pullPolicy=Never)
fi
# The CRD is part of the release. --take-ownership: one created outside Helm (the integration tests apply
# theirs; a chart version before 0.2.0 installed it from crds/) joins the release; --force-conflicts: the
# chart's CRD wins over fields another client (another checkout's tests) wrote since.
# The chart's default policy is closed; it allows one more credentials Secret here, the MLflow one of the
# e2e tracking scenario (tests/e2e/test_tracking.py).
"$BIN/helm" upgrade --install "$RELEASE" "${chart[@]}" -n "$NS" --create-namespace "${watch[@]}" "${kueue[@]}" \
  --take-ownership --force-conflicts \
  --set storage.endpoint="$LFT_S3_ENDPOINT" --set storage.secretName="$SECRET" \
  --set "policy.allowedStorageSecrets={mlflow-credentials}" \
  --wait --timeout 180s
# The operator's pods pass Pod Security "restricted", as the trainer pods do: enforce it on its namespace.
"$BIN/kubectl" label namespace "$NS" --overwrite \
  pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/enforce-version=latest >/dev/null
# A new local image under the same tag needs a new pod: restart when the image ID changed (a release has a new
# version, so a new tag, each time).
want=$([ -z "${LFT_CHART:-}" ] && docker image inspect -f '{{.Id}}' lft/operator:dev || true)
have=$("$BIN/kubectl" get pods -n "$NS" -l app.kubernetes.io/name=$RELEASE \
  -o jsonpath='{.items[0].status.containerStatuses[0].imageID}' 2>/dev/null || true)
if [ -n "$want" ] && [ -n "$have" ] && [[ "$have" != *"${want#sha256:}"* ]]; then
  "$BIN/kubectl" rollout restart deploy/$RELEASE -n "$NS"
fi
"$BIN/kubectl" rollout status deploy/$RELEASE -n "$NS" --timeout=180s
echo "operator deployed: helm -n $NS status $RELEASE"
