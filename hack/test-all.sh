#!/usr/bin/env bash
# `make test`: every suite in order, on real parts: unit (+ trainer on a local S3 server), operator
# integration on a real API server, end to end on a three-node kind cluster with real images.
# Every suite runs even when an earlier one fails (so one run shows all failures); exit is non-zero
# if any failed. The last line adds up all suites' pytest counts.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${LFT_TEST_OUT:-_out/test}
rm -rf "$OUT"; mkdir -p "$OUT"
export LFT_REQUIRE_CLUSTER=1 LFT_REQUIRE_TOOLS=1
# The integration suites' API-level control plane (tests/cluster/up.sh --api-only); the end-to-end stage
# switches to the kind cluster's.
export KUBECONFIG=/var/lib/lft/cluster/kubeconfig
failed=()
t0=$SECONDS

suite() {  # suite NAME -- command...
  local name=$1; shift 2
  local s=$SECONDS
  echo "=== $name: $*"
  if "$@"; then echo "=== $name: ok ($((SECONDS - s)) s)"; return 0; fi
  echo "=== $name: FAILED ($((SECONDS - s)) s)"; failed+=("$name")
  return 1  # `suite a && suite b`: b needs a
}
pytest_suite() {  # pytest_suite NAME paths/args...
  local name=$1; shift
  suite "$name" -- "$PY" -m pytest -q -p no:cacheprovider --junitxml="$OUT/$name.xml" "$@"
}
on_cluster_failure() {
  bash tests/cluster/logs.sh >"$OUT/cluster-logs.txt" 2>&1 || true
  echo "component logs: $OUT/cluster-logs.txt"; tail -n 60 "$OUT/cluster-logs.txt"
}

suite lint -- "${PY%/python}/ruff" check api operator trainer_image cli tests bench
suite mypy -- "${PY%/python}/mypy"  # lft_api, lft_operator, lft_cli: [tool.mypy] in pyproject.toml

# The images build in the background (niced) from here until the end-to-end stage needs them: on a cold
# machine their wheel downloads, debootstrap and layer writes overlap the Go builds of Kubernetes (CPU
# bound) instead of following them (~8 min saved); warm, both are no-ops. Docker is started first, once,
# so that the cluster's own hack/docker.sh call finds it running.
bash hack/docker.sh >/dev/null
nice -n 10 env LFT_LOAD_IMAGES=0 bash hack/build-images.sh >"$OUT/images.log" 2>&1 &
images_pid=$!
images_built() {  # the background build's log; the images are not loaded into the cluster: the end-to-end
  local rc=0      # suite installs the release from the local registry, whose images the kubelet pulls
  wait "$images_pid" || rc=$?
  cat "$OUT/images.log"
  return "$rc"
}

source tests/cluster/lib/common.sh  # K8S_OLDEST_VERSION, K8S_NEWEST_VERSION, LFT_CACHE
# The chart tests need helm (LFT_REQUIRE_TOOLS): on a fresh machine nothing has installed it yet.
suite tools -- bash tests/cluster/install-tools.sh helm
# The workflow, krew plugin and OCI push tests need Go tools built in the background below: they run after it.
go_tool_tests=(tests/unit/test_workflows.py tests/unit/test_krew_plugin.py tests/integration/test_adapter_oci.py)
pytest_suite unit tests/unit "${go_tool_tests[@]/#/--ignore=}"

# The oldest supported minor: the API-level suite (operator, CRD schema and CEL rules, chart, CLI, status
# sink) on its own kube-apiserver + etcd + kube-controller-manager, with its own kubectl.
shopt -s nullglob  # a pattern that matches no file adds nothing (pytest refuses a missing path)
api_level=(tests/integration/test_operator_*.py tests/integration/test_crd_*.py tests/integration/test_chart_install.py
           tests/integration/test_cli.py tests/integration/test_trainer_status.py)
shopt -u nullglob
if suite "cluster-api-$K8S_OLDEST_VERSION" -- env K8S_VERSION="$K8S_OLDEST_VERSION" bash tests/cluster/up.sh --api-only; then
  export LFT_KUBECTL=$LFT_CACHE/k8s/$K8S_OLDEST_VERSION/kubectl
  pytest_suite "integration-$K8S_OLDEST_VERSION" "${api_level[@]}"
  unset LFT_KUBECTL
else
  on_cluster_failure
fi

# The newest: every integration test (the operator, chart install and trainer status sink need the API
# server; the trainer tests a local S3 server they start themselves); API-server-only mode is enough.
# up.sh stops the oldest minor's control plane first (and wipes its etcd data).
if suite cluster-api -- bash tests/cluster/up.sh --api-only; then
  bash hack/undeploy.sh  # the tests run their own operator processes
else
  on_cluster_failure
fi
# The Go builds the later suites need (cold ~10 min of CPU, no-ops once cached) overlap the integration suite,
# niced: Kueue, the OCI registry, oras, actionlint and krew. The suites that use them wait for it (go_tools_built).
nice -n 10 bash hack/build-from-modules.sh kueue registry oras actionlint krew >"$OUT/go-tools-build.log" 2>&1 &
go_tools_pid=$!
go_tools_built() { local rc=0; wait "$go_tools_pid" || rc=$?; tail -n 5 "$OUT/go-tools-build.log"; return "$rc"; }
# The kind node image for the end-to-end stage (cold: kubeadm, containerd, CoreDNS... from the module proxy;
# cached by key: a second run takes a second), also overlapping the integration suite.
nice -n 10 bash -c 'bash hack/base-image.sh && bash hack/kind/node-image.sh' >"$OUT/kind-node-image.log" 2>&1 &
kind_image_pid=$!
kind_image_built() { local rc=0; wait "$kind_image_pid" || rc=$?; tail -n 5 "$OUT/kind-node-image.log"; return "$rc"; }
pytest_suite integration tests/integration "${go_tool_tests[@]/#/--ignore=}"
suite go-tools -- go_tools_built && pytest_suite unit-go-tools "${go_tool_tests[@]}"

# The end-to-end suite runs on kind: a fresh cluster of one control plane and two workers on the node image built
# offline (hack/kind/up.sh; the workers keep their image stores between clusters), after the API-level control
# plane stopped. It installs as a user does: `make release` pushes the images and the chart to the local OCI
# registry (hack/registry.sh), `helm install oci://...` (hack/deploy.sh with LFT_CHART) deploys it, and the
# workers' containerd pulls the images (from the registry's read-only instance on the Docker bridge). A new
# version per run: a tag is never reused for other content.
version=$(sed -n 's/^version: //p' charts/lora-finetune-operator/Chart.yaml)-ci.$(date -u +%Y%m%d%H%M%S)
eval "$(bash hack/registry.sh env)"
export LFT_CHART=oci://$LFT_REGISTRY/charts/lora-finetune-operator LFT_CHART_VERSION=$version LFT_REQUIRE_RELEASE=1
export LFT_KIND_CLUSTER=lft LFT_KIND_KUBECONFIG=/var/lib/lft/kind/kubeconfig
on_kind_failure() {
  local node
  for node in $(docker ps --format '{{.Names}}' --filter "label=io.x-k8s.kind.cluster=$LFT_KIND_CLUSTER"); do
    echo "--- $node: kubelet and containerd (last 40 lines each)"
    docker exec "$node" journalctl -u kubelet -u containerd --no-pager -n 40 2>/dev/null || true
  done >"$OUT/kind-logs.txt" 2>&1
  KUBECONFIG=$LFT_KIND_KUBECONFIG /var/cache/lft/bin/kubectl get nodes,pods -A -o wide >>"$OUT/kind-logs.txt" 2>&1
  echo "kind node logs: $OUT/kind-logs.txt"; tail -n 60 "$OUT/kind-logs.txt"
}
bash tests/cluster/down.sh >/dev/null 2>&1 || true  # the API-level control plane: its CPU goes to the nodes
if suite kind-node-image -- kind_image_built \
   && suite kind -- bash -c 'bash hack/kind/down.sh >/dev/null 2>&1; bash hack/kind/up.sh' \
   && suite images -- images_built \
   && suite registry -- bash hack/registry.sh start \
   && suite release -- env REGISTRY="$LFT_REGISTRY" VERSION="$version" RELEASE_OUT="$OUT/release" bash hack/release.sh \
   && suite s3 -- bash hack/s3.sh start && suite deploy -- env KUBECONFIG="$LFT_KIND_KUBECONFIG" bash hack/deploy.sh; then
  export KUBECONFIG=$LFT_KIND_KUBECONFIG
  pytest_suite e2e tests/e2e --ignore=tests/e2e/test_kueue.py --durations=12
  [[ " ${failed[*]} " == *" e2e "* ]] && on_kind_failure
  # Kueue (tests/e2e/test_kueue.py), its own suites: Kueue 0.17.0 as a host process (cached build) whose webhooks
  # the API server calls on the Docker bridge, the operator redeployed with its integration on. A Kueue that does
  # not start fails kueue-up only; kueue-down removes its webhooks and stops it (its CRDs stay), and the operator
  # goes back to its default.
  export KUEUE_KUBECONFIG=$LFT_KIND_KUBECONFIG KUEUE_WEBHOOK_HOST=$(bash hack/bridge-ip.sh)
  if suite kueue-up -- bash tests/cluster/kueue-up.sh && suite deploy-kueue -- env LFT_KUEUE=1 bash hack/deploy.sh; then
    export LFT_REQUIRE_KUEUE=1
    pytest_suite e2e-kueue tests/e2e/test_kueue.py
    unset LFT_REQUIRE_KUEUE
    [[ " ${failed[*]} " == *" e2e-kueue "* ]] && { on_kind_failure; tail -n 80 "${LFT_STATE:-/var/lib/lft}/cluster/logs/kueue.log" 2>/dev/null; }
  else
    on_kind_failure
    tail -n 80 "${LFT_STATE:-/var/lib/lft}/cluster/logs/kueue.log" 2>/dev/null
  fi
  suite kueue-down -- bash tests/cluster/kueue-down.sh
  suite redeploy -- bash hack/deploy.sh
  unset KUBECONFIG
else
  on_kind_failure
fi

echo "=== total time: $((SECONDS - t0)) s"
"$PY" - "$OUT" <<'PYEOF'
import glob, sys, xml.etree.ElementTree as ET
tot = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
for f in glob.glob(sys.argv[1] + "/*.xml"):
    for s in ET.parse(f).getroot().iter("testsuite"):
        for k in tot:
            tot[k] += int(s.get(k, 0))
failed = tot["failures"] + tot["errors"]
passed = tot["tests"] - failed - tot["skipped"]
print(f"{passed} passed, {failed} failed, {tot['skipped']} skipped")
PYEOF
if [ ${#failed[@]} -gt 0 ]; then echo "FAILED suites: ${failed[*]}"; exit 1; fi
