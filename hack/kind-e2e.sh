#!/usr/bin/env bash
# `make kind-e2e`: end-to-end scenarios on kind.
# - Online (default; a laptop with Docker, kind, kubectl, helm and registry access): kind's official node image,
#   images built the ordinary way (python:3.11-slim, pip from the index), `kind load docker-image`, MinIO in the
#   cluster, the operator by Helm, every e2e scenario.
# - Offline (LFT_KIND_OFFLINE=1; the project's machines): `make e2e`, which is the same on the node image built
#   offline (hack/kind/node-image.sh), a cluster of one control plane and two workers (hack/kind/up.sh), the
#   images `kind load`ed onto the workers, the S3 server on the host (hack/s3.sh). `make test` runs the suite there
#   too, installed from a local registry.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ ${LFT_KIND_OFFLINE:-0} == 1 ]] && exec make e2e
export LFT_KIND_CLUSTER=${KIND_CLUSTER:-lft-e2e}
CLUSTER=$LFT_KIND_CLUSTER
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind-e2e needs $tool on PATH" >&2; exit 1; }
done
# The same three-node cluster as offline (hack/kind/cluster.yaml), on kind's official node image.
export LFT_KIND_KUBECONFIG=${KIND_KUBECONFIG:-$HOME/.kube/kind-$CLUSTER}
export KUBECONFIG=$LFT_KIND_KUBECONFIG
LFT_KIND_NODE_IMAGE=${LFT_KIND_NODE_IMAGE:-kindest/node:v1.37.0} KUBECTL=$(command -v kubectl) bash hack/kind/up.sh
LFT_LOAD_IMAGES=0 bash hack/build-images.sh --online
kind load docker-image lft/operator:dev lft/trainer:cpu --name "$CLUSTER" --nodes "$CLUSTER-worker,$CLUSTER-worker2"
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
  LFT_KUBECTL=$(command -v kubectl) LFT_REQUIRE_CLUSTER=1 .venv/bin/python -m pytest tests/e2e -q \
  --ignore=tests/e2e/test_kueue.py
