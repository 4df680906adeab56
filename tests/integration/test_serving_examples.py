"""examples/serving/ through the real kubectl against the real API server: `kubectl apply --dry-run=server`
has the server validate each object (strict field validation: unknown or mistyped fields fail; admission runs
too), without storing it. (kubectl 1.37's `--dry-run=client` validates nothing: validation is the server's.)

The KServe CRD is not installed on the test cluster, so kubectl cannot map an InferenceService at all (even
`kubectl create --dry-run=server` fails with "no matches for kind"). Its file is checked in two
parts: the ServiceAccount as it is, and the predictor's pod fields (KServe's PredictorSpec inlines a PodSpec)
as a Pod; the InferenceService's own fields are checked by parsing (tests/unit/test_serving_examples.py).
No GPU, vLLM or KServe runs here."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.kube import KUBECTL, Kube

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "serving"
# KServe's ComponentExtensionSpec fields next to the inlined PodSpec (serving.kserve.io/v1beta1)
KSERVE_ONLY = {"minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "containerConcurrency", "timeout",
               "canaryTrafficPercent", "logger", "batcher", "labels", "annotations", "deploymentStrategy",
               "model", "workerSpec"}


def apply(kube: Kube, namespace: str, *args: str, doc: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([KUBECTL, "--kubeconfig", kube.kubeconfig, "apply", "-n", namespace, *args],
                          input=json.dumps(doc) if doc else None, capture_output=True, text=True, timeout=60)


def dry_run(kube: Kube, namespace: str, *, path: Path | None = None, doc: dict | None = None) -> str:
    out = apply(kube, namespace, "--dry-run=server", "-f", str(path) if path else "-", doc=doc)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_vllm_deployment_and_the_finetune_pass_a_client_dry_run(kube: Kube, namespace: str) -> None:
    assert dry_run(kube, namespace, path=EXAMPLES / "vllm-deployment.yaml").split("\n")[:2] == [
        "deployment.apps/phi3-support-bot-vllm created (server dry run)",
        "service/phi3-support-bot-vllm created (server dry run)"]
    assert "lorafinetune.finetune.dev/phi3-support-bot created (server dry run)" in \
        dry_run(kube, namespace, path=EXAMPLES / "phi3-finetune.yaml")


def test_kserve_file_pod_part_passes_a_client_dry_run(kube: Kube, namespace: str) -> None:
    docs = [d for d in yaml.safe_load_all((EXAMPLES / "kserve-inferenceservice.yaml").read_text()) if d]
    account, isvc = docs
    assert dry_run(kube, namespace, doc=account).strip() == \
        "serviceaccount/phi3-support-bot-kserve created (server dry run)"
    made = apply(kube, namespace, "-f", "-", doc=account)  # the pod's admission looks its ServiceAccount up
    assert made.returncode == 0, made.stderr
    predictor = isvc["spec"]["predictor"]
    pod_spec = {k: v for k, v in predictor.items() if k not in KSERVE_ONLY}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": pod_spec}
    assert dry_run(kube, namespace, doc=pod).strip() == "pod/predictor created (server dry run)"


def test_the_dry_run_catches_a_mistyped_field(kube: Kube, namespace: str) -> None:
    """The check above can fail: a field the schema does not know is refused."""
    doc = next(yaml.safe_load_all((EXAMPLES / "vllm-deployment.yaml").read_text()))
    doc["spec"]["template"]["spec"]["containers"][0]["arg"] = ["--model=x"]
    out = apply(kube, namespace, "--dry-run=server", "-f", "-", doc=doc)
    assert out.returncode != 0 and 'unknown field "spec.template.spec.containers[0].arg"' in out.stderr, out.stderr
