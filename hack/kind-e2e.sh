#!/usr/bin/env bash
# `make kind-e2e`: end-to-end scenarios on kind.
# - Online (default; a laptop with Docker, kind, kubectl, helm and registry access): kind's official node image,
#   images built the ordinary way (python:3.11-slim, pip from the index), `kind load docker-image`, MinIO in the
#   cluster, the operator by Helm, every e2e scenario.
# - Offline (LFT_KIND_OFFLINE=1; the project's machines): the node image built offline (hack/kind/node-image.sh),
#   a cluster of one control plane and two workers (hack/kind/up.sh), the images of hack/build-images.sh loaded with
#   `kind load`, the S3 server on the host (hack/s3.sh), and the scenarios that need kind (tests/e2e/kind: a worker
#   stopped during a two-node run) plus the multi-node ones (LFT_KIND_TESTS to choose others).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ${LFT_KIND_OFFLINE:-0} == 1 ]]; then
  export LFT_KIND_CLUSTER=${LFT_KIND_CLUSTER:-lft}
  export KUBECONFIG=${LFT_KIND_KUBECONFIG:-/var/lib/lft/kind/kubeconfig}
  bash hack/docker.sh >/dev/null
  bash hack/base-image.sh
  LFT_LOAD_IMAGES=0 bash hack/build-images.sh
  bash hack/kind/up.sh
  kind=$(command -v kind || echo /var/cache/lft/kind/0.33.0/kind)
  # Workers only: the 5.8 GB trainer image costs about 8 GB of disk per node.
  "$kind" load docker-image lft/operator:dev lft/trainer:cpu --name "$LFT_KIND_CLUSTER" \
    --nodes "$LFT_KIND_CLUSTER-worker,$LFT_KIND_CLUSTER-worker2"
  bash hack/s3.sh start
  bash hack/deploy.sh
  read -r -a tests <<<"${LFT_KIND_TESTS:-tests/e2e/kind tests/e2e/test_multinode.py}"
  LFT_KUBECTL=/var/cache/lft/bin/kubectl LFT_REQUIRE_CLUSTER=1 .venv/bin/python -m pytest -q -s "${tests[@]}"
  exit
fi
CLUSTER=${KIND_CLUSTER:-lft-e2e}
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind-e2e needs $tool on PATH" >&2; exit 1; }
done
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s
export KUBECONFIG=${KIND_KUBECONFIG:-$HOME/.kube/kind-$CLUSTER}
kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"
bash hack/build-images.sh --online
kind load docker-image lft/operator:dev lft/trainer:cpu --name "$CLUSTER"
kubectl apply -f tests/e2e/kind/minio.yaml
kubectl rollout status deploy/minio -n lft-storage --timeout=300s
kubectl run mc-mb -n lft-storage --rm -i --restart=Never --image=quay.io/minio/mc:latest --command -- \
  sh -c 'mc alias set m http://minio:9000 e2e-access-key e2e-secret-key-do-not-leak && mc mb -p m/lft'
helm upgrade --install lora-finetune-operator charts/lora-finetune-operator -n lft-system --create-namespace \
  --set image.repository=lft/operator --set image.tag=dev --set image.pullPolicy=Never \
  --set trainer.image=lft/trainer:cpu --set trainer.pullPolicy=Never \
  --set storage.endpoint=http://minio.lft-storage:9000 --wait --timeout 300s
# The tests reach MinIO through a port-forward; the pods by its Service name.
kubectl port-forward -n lft-storage svc/minio 19000:9000 >/dev/null 2>&1 &
pf=$!
trap 'kill $pf 2>/dev/null || true' EXIT
sleep 2
LFT_S3_ENDPOINT=http://127.0.0.1:19000 LFT_S3_POD_ENDPOINT=http://minio.lft-storage:9000 \
  LFT_KUBECTL=$(command -v kubectl) LFT_REQUIRE_CLUSTER=1 .venv/bin/python -m pytest tests/e2e -q --ignore=tests/e2e/kind
