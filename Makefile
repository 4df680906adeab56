# LoRA fine-tuning operator. `make demo` runs the main job on a local kind cluster; `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    ?= .venv
PY      := $(VENV)/bin/python
PYTEST  := $(PY) -m pytest
BIN     ?= /var/cache/lft/bin
KUBECTL := $(BIN)/kubectl
HELM    := $(BIN)/helm
# The kind cluster (make cluster-up) for users' targets; the API-level control plane (make cluster-api) for the
# integration tests, which name it themselves.
KIND_KUBECONFIG := /var/lib/lft/kind/kubeconfig
API_KUBECONFIG  := /var/lib/lft/cluster/kubeconfig
export KUBECONFIG ?= $(KIND_KUBECONFIG)
export PATH := $(BIN):$(PATH)

.PHONY: help venv test test-unit test-integration e2e demo kind-e2e kind-node-image images images-gpu cluster-up cluster-api cluster-down \
        s3-up s3-down kueue-up kueue-down registry-up registry-down deploy undeploy lint crds chart release bench

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

venv: ## Create .venv with the pinned dependencies, and the tests' MLflow server venv (idempotent)
	@bash hack/venv.sh
	@bash hack/mlflow-venv.sh

test: venv ## Everything: unit, integration (real API server), end to end (real cluster, images, S3)
	bash hack/test-all.sh

test-unit: venv ## Unit tests: pure functions, no cluster (chart tests use helm when installed)
	$(PYTEST) tests/unit -q

test-integration: venv cluster-api ## Trainer on a real S3 server; operator, chart, status sink on a real API server
	KUBECONFIG=$(API_KUBECONFIG) bash hack/undeploy.sh
	KUBECONFIG=$(API_KUBECONFIG) LFT_REQUIRE_CLUSTER=1 $(PYTEST) tests/integration -q

e2e: venv cluster-up images s3-up deploy ## End-to-end scenarios on the kind cluster, this checkout's images (make test: a release's)
	LFT_REQUIRE_CLUSTER=1 $(PYTEST) tests/e2e -q --ignore=tests/e2e/test_kueue.py

demo: venv cluster-up images s3-up deploy ## The main job: apply the tiny example and follow it to Succeeded
	bash hack/demo.sh

kind-e2e: venv ## e2e on kind with kind's official node image and MinIO (a machine with registry access; docs/kind.md)
	bash hack/kind-e2e.sh

kind-node-image: ## Build the kind node image offline (lft/kind-node:v1.37.2, cached; docs/kind.md)
	bash hack/docker.sh >/dev/null
	bash hack/base-image.sh
	bash hack/kind/node-image.sh

images: venv ## Build the operator image and the CPU tiny-model trainer image; `kind load` them onto the workers
	bash hack/build-images.sh

images-gpu: venv ## GPU trainer image lft/trainer:gpu (CUDA torch, ~2.8 GB of wheels) + smoke test; not in test
	bash hack/build-images.sh --variant gpu trainer
	bash hack/smoke-gpu-image.sh

cluster-up: kind-node-image ## Start (or reuse) the kind cluster: 1 control plane, 2 workers, Kubernetes 1.37 (docs/kind.md)
	bash hack/kind/up.sh

cluster-api: ## Start (or reuse) the API-level control plane for the integration tests (etcd, kube-apiserver, -controller-manager)
	bash tests/cluster/up.sh --api-only

cluster-down: s3-down ## Delete the kind cluster, stop the API-level control plane: no process left behind
	bash hack/kind/down.sh
	bash tests/cluster/down.sh

kueue-up: venv cluster-up ## Install Kueue 0.17.0 and start it on the host (then: LFT_KUEUE=1 make deploy; docs/kueue.md)
	KUEUE_KUBECONFIG=$(KUBECONFIG) KUEUE_WEBHOOK_HOST=$$(bash hack/bridge-ip.sh) \
	  bash tests/cluster/kueue-up.sh

kueue-down: ## Stop Kueue and remove its webhook configurations (its CRDs and objects stay)
	KUEUE_KUBECONFIG=$(KUBECONFIG) bash tests/cluster/kueue-down.sh

s3-up: venv ## Start the S3 server the pods use (moto on the Docker bridge) and create the bucket
	bash hack/s3.sh start

s3-down:
	bash hack/s3.sh stop

deploy: ## Install/upgrade the operator with the Helm chart into the kind cluster
	bash hack/deploy.sh

undeploy: ## Remove the operator installed by deploy (integration tests run their own)
	bash hack/undeploy.sh

crds: venv ## Regenerate crds/, the chart's CRDs and docs/api.md from the pydantic spec
	$(PY) -m lft_operator.crdgen --write
	$(PY) -m lft_operator.apidocs --write

CHART_OUT ?= _out/chart
registry-up: ## Start a local OCI registry on 127.0.0.1:5000 (distribution v3, built from the Go module proxy)
	bash hack/registry.sh start

registry-down: ## Stop the local OCI registry (its data stays under /var/lib/lft/registry)
	bash hack/registry.sh stop

release: ## Push the images and the chart (OCI) to REGISTRY as VERSION (after make images; docs/install.md)
	bash hack/release.sh

chart: ## Package the Helm chart (CRD included) as $(CHART_OUT)/lora-finetune-operator-<version>.tgz
	$(HELM) lint charts/lora-finetune-operator
	$(HELM) package charts/lora-finetune-operator -d $(CHART_OUT)

lint: venv ## ruff + mypy (api, operator, cli) + helm lint
	$(VENV)/bin/ruff check api operator trainer_image cli tests bench
	$(VENV)/bin/mypy
	$(HELM) lint charts/lora-finetune-operator

bench: venv ## Benchmarks: trainer vs cookbook recipe, operator at 200 resources
	$(PY) bench/trainer_vs_cookbook.py
	bash tests/cluster/up.sh --api-only && KUBECONFIG=$(API_KUBECONFIG) $(PY) bench/operator_scale.py
