"""examples/serving/ through the real kubectl against the real API server: `kubectl apply --dry-run=server`
has the server validate each object (strict field validation: unknown or mistyped fields fail; admission runs
too), without storing it. (kubectl 1.37's `--dry-run=client` validates nothing: validation is the server's.)

The LLMInferenceService is checked against KServe's own CRD: the test installs the vendored
tests/fixtures/crds/ copy (KServe v0.17.0, without its conversion webhook) on the test API server, and leaves it
there (cluster-scoped, the same content each time: a concurrent run needs it too). Its pod template is also
dry-run as a Pod, as the CRD's schema only checks the PodSpec's structure, not what the Pod API validates
(names, volume references). No GPU, vLLM or KServe runs here."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.kube import KUBECTL, Kube
from tests.support.serving import EXAMPLES, kserve_crd

pytestmark = pytest.mark.integration

LLMISVC_FILE = EXAMPLES / "kserve-llminferenceservice.yaml"


def apply(kube: Kube, namespace: str, *args: str, doc: dict | None = None,
          cache: Path | None = None) -> subprocess.CompletedProcess:
    fresh = ["--cache-dir", str(cache)] if cache else []  # a discovery cache from before the CRD: no such kind
    return subprocess.run([KUBECTL, "--kubeconfig", kube.kubeconfig, *fresh, "apply", "-n", namespace, *args],
                          input=json.dumps(doc) if doc else None, capture_output=True, text=True, timeout=60)


def dry_run(kube: Kube, namespace: str, *, path: Path | None = None, doc: dict | None = None,
            cache: Path | None = None) -> str:
    out = apply(kube, namespace, "--dry-run=server", "-f", str(path) if path else "-", doc=doc, cache=cache)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def kserve(kube: Kube) -> str:
    """KServe's LLMInferenceService CRD installed and served; the API path of its v1alpha1 version."""
    api = "/apis/serving.kserve.io/v1alpha1/llminferenceservices"
    kube.install_crd(kserve_crd(), api, timeout=60)
    return api


def test_vllm_deployment_and_the_finetune_pass_a_server_dry_run(kube: Kube, namespace: str) -> None:
    assert dry_run(kube, namespace, path=EXAMPLES / "vllm-deployment.yaml").split("\n")[:2] == [
        "deployment.apps/phi3-support-bot-vllm created (server dry run)",
        "service/phi3-support-bot-vllm created (server dry run)"]
    assert "lorafinetune.finetune.dev/phi3-support-bot created (server dry run)" in \
        dry_run(kube, namespace, path=EXAMPLES / "phi3-finetune.yaml")


def test_llm_inference_service_passes_a_server_dry_run(kube: Kube, namespace: str, kserve: str,
                                                       tmp_path: Path) -> None:
    out = dry_run(kube, namespace, path=LLMISVC_FILE, cache=tmp_path / "kube-cache")
    assert out.strip().split("\n") == [
        "serviceaccount/phi3-support-bot-kserve created (server dry run)",
        "llminferenceservice.serving.kserve.io/phi3-support-bot created (server dry run)"]


def test_llm_inference_service_as_kserve_0_17_stores_it(kube: Kube, namespace: str, kserve: str,
                                                        tmp_path: Path) -> None:
    doc = yaml.safe_load_all(LLMISVC_FILE.read_text())
    llmisvc = [d for d in doc if d and d["kind"] == "LLMInferenceService"][0]
    llmisvc["apiVersion"] = "serving.kserve.io/v1alpha2"
    assert dry_run(kube, namespace, doc=llmisvc, cache=tmp_path / "kube-cache").strip() == \
        "llminferenceservice.serving.kserve.io/phi3-support-bot created (server dry run)"


def test_the_dry_run_catches_a_mistyped_llm_inference_service_field(kube: Kube, namespace: str, kserve: str,
                                                                     tmp_path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(LLMISVC_FILE.read_text()) if d]
    llmisvc = docs[1]
    llmisvc["spec"]["model"]["url"] = llmisvc["spec"]["model"].pop("uri")
    out = apply(kube, namespace, "--dry-run=server", "-f", "-", doc=llmisvc, cache=tmp_path / "kube-cache")
    assert out.returncode != 0 and 'unknown field "spec.model.url"' in out.stderr, out.stderr


def test_llm_inference_service_pod_template_passes_as_a_pod(kube: Kube, namespace: str) -> None:
    account, llmisvc = [d for d in yaml.safe_load_all(LLMISVC_FILE.read_text()) if d]
    made = apply(kube, namespace, "-f", "-", doc=account)  # the pod's admission looks its ServiceAccount up
    assert made.returncode == 0, made.stderr
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "main"}, "spec": llmisvc["spec"]["template"]}
    assert dry_run(kube, namespace, doc=pod).strip() == "pod/main created (server dry run)"


def test_the_dry_run_catches_a_mistyped_field(kube: Kube, namespace: str) -> None:
    """The check above can fail: a field the schema does not know is refused."""
    doc = next(yaml.safe_load_all((EXAMPLES / "vllm-deployment.yaml").read_text()))
    doc["spec"]["template"]["spec"]["containers"][0]["arg"] = ["--model=x"]
    out = apply(kube, namespace, "--dry-run=server", "-f", "-", doc=doc)
    assert out.returncode != 0 and 'unknown field "spec.template.spec.containers[0].arg"' in out.stderr, out.stderr
