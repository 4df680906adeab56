"""The CRD's schema on a real API server: strict field validation, CEL rules, immutability, `kubectl explain`.

The schema is structural with no x-kubernetes-preserve-unknown-fields (lft_operator.crdgen), so the API server
itself refuses what the operator used to refuse afterwards (UnknownField, QuantizationNeedsGPU...), at apply
time, with the field's path and the rule's message. No operator is needed here: these are the API server's
answers (when a session's operator runs too, it may accept and start these resources; the tests allow that).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.support.kube import KUBECTL, ApiError, Kube, wait_until
from tests.support.operator import spec

API_VERSION = "finetune.dev/v1alpha1"


def _kubectl(kube: Kube, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    if not Path(KUBECTL).exists():
        pytest.skip(f"kubectl not found at {KUBECTL}")
    return subprocess.run([KUBECTL, "--kubeconfig", kube.kubeconfig, *args], input=stdin, capture_output=True,
                          text=True, timeout=60, check=False)


def _manifest(name: str, **overrides) -> dict:
    return {"apiVersion": API_VERSION, "kind": "LoRAFineTune", "metadata": {"name": name}, "spec": spec(**overrides)}


def _apply(kube: Kube, namespace: str, manifest: dict, *flags: str) -> subprocess.CompletedProcess:
    return _kubectl(kube, "apply", "-n", namespace, *flags, "-f", "-", stdin=json.dumps(manifest))


def test_kubectl_apply_refuses_an_unknown_field_naming_it(kube: Kube, namespace: str) -> None:
    typo = _manifest("typo", lora={"rnak": 4})
    out = _apply(kube, namespace, typo)  # kubectl's default since 1.27: --validate=strict, checked by the server
    assert out.returncode != 0 and 'unknown field "spec.lora.rnak"' in out.stderr, out.stderr
    out = _apply(kube, namespace, typo, "--server-side")
    assert out.returncode != 0 and ".spec.lora.rnak: field not declared in schema" in out.stderr, out.stderr
    assert kube.lft(namespace, "typo") is None

    # Deep in a core/v1 type too (typed from the Kubernetes OpenAPI, no longer a free-form object).
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpresions": [{"key": "a", "operator": "In", "values": ["b"]}]}]}}}
    out = _apply(kube, namespace, _manifest("typo", affinity=affinity))
    assert out.returncode != 0 and "nodeSelectorTerms[0].matchExpresions" in out.stderr, out.stderr

    # A client that asks for strict validation (as the operator does) gets a 400 naming the field; one that asks
    # for nothing gets the field dropped with a warning: never stored, so the operator never sees one.
    body = _manifest("typo", lora={"rnak": 4})
    with pytest.raises(ApiError) as refused:
        kube.request("POST", kube.lft_path(namespace) + "?fieldValidation=Strict", body)
    assert refused.value.status == 400 and 'unknown field "spec.lora.rnak"' in refused.value.message
    created = kube.create(kube.lft_path(namespace), body)
    assert "rnak" not in created["spec"]["lora"] and created["spec"]["lora"]["r"] == 16


@pytest.mark.parametrize(
    ("overrides", "path", "message"),
    [
        ({"lora": {"quantization": "4bit"}}, "spec.lora.quantization",
         "lora.quantization 4bit (QLoRA, bitsandbytes) needs a GPU"),
        ({"dataset": {"uri": "d", "format": "text"}, "training": {"assistantOnlyLoss": True}},
         "spec.training.assistantOnlyLoss", "training.assistantOnlyLoss needs chat rows"),
        ({"dataset": {"uri": "d", "mixture": [{"uri": "e", "weight": 1}]}}, "spec.dataset.mixture",
         "dataset.uri and dataset.mixture are exclusive: set exactly one"),
        ({"dataset": {"mixture": [{"uri": "d", "weight": 1, "format": "text"}]}, "training": {"assistantOnlyLoss": True}},
         "spec.dataset.mixture", "no dataset.mixture[].format may be text"),
        ({"training": {"reportTo": ["mlflow"]}}, "spec.training.mlflow",
         "training.reportTo lists mlflow: set training.mlflow"),
        ({"training": {"numProcesses": 4}, "resources": {"gpus": 2}}, "spec.training.numProcesses",
         "training.numProcesses differs from resources.gpus"),
        ({"training": {"numProcesses": "all"}}, "spec.training.numProcesses",
         "training.numProcesses must be auto or 1 to 64, not all"),
        ({"podTemplate": {"volumeMounts": [{"name": "data", "mountPath": "/data"}]}}, "spec.podTemplate.volumeMounts",
         "every podTemplate.volumeMounts[].name must name a volume of podTemplate.volumes"),
        ({"training": {"reportTo": ["mlflow"], "mlflow": {"trackingUri": "http://user:pw@mlflow:5000"}}},
         "spec.training.mlflow.trackingUri", "must not contain credentials"),
        ({"output": {"uri": "s3://lft-out/oci-repo", "push": {"oci": {"repository": "team/Adapters:v1"}}}},
         "spec.output.push.oci.repository", "must be host[:port]/path with lowercase path components"),
        ({"output": {"uri": "s3://lft-out/oci-http", "push": {"oci": {"repository": "registry.example.com/a",
                                                                     "plainHttp": True}}}},
         "spec.output.push.oci.plainHttp", "plainHttp is only for a registry on loopback"),
        ({"lora": {"init": "pissa", "useDora": True}}, "spec.lora.init",
         "lora.init pissa needs lora.quantization none and lora.useDora false"),
        ({"model": {"name": "m", "adapter": "s3://lft-out/a/adapter"}, "lora": {"init": "olora"}}, "spec.lora.init",
         "model.adapter continues an existing adapter: lora.init"),
        ({"training": {"maxSteps": 30, "earlyStopping": {"patience": 2}}}, "spec.training.earlyStopping",
         "training.earlyStopping needs evaluation: set training.evalSteps"),
        ({"training": {"extra": {"learning_rate": "0.1", "adam_beta2": "0.9"}}}, "spec.training.extra",
         "training.extra sets a field that a typed field or the operator owns"),
        ({"training": {"extra": {"hub_model_id": "me/adapter"}}}, "spec.training.extra",
         "training.extra sets a field of a family the operator owns (hub_*"),
    ],
    ids=["qlora-needs-gpu", "assistant-only-needs-chat", "dataset-uri-or-mixture", "mixture-assistant-only",
         "mlflow-settings", "processes-per-gpu", "processes-auto",
         "mounts-need-volumes", "no-credentials-in-uri", "oci-repository", "oci-plain-http",
         "converted-init-plain-lora", "adapter-or-init", "early-stopping-needs-eval", "extra-typed-key",
         "extra-operator-key"],
)
def test_cel_rules_refuse_at_apply_time(kube: Kube, namespace: str, overrides: dict, path: str, message: str) -> None:
    out = _apply(kube, namespace, _manifest("rule", **overrides))
    assert out.returncode != 0, out.stdout
    assert path in out.stderr and message in out.stderr, out.stderr
    assert kube.lft(namespace, "rule") is None


def test_spec_is_immutable_once_the_job_exists_except_suspend_and_run_policy(kube: Kube, namespace: str) -> None:
    # A Secret the admin policy does not allow: an operator running in this session refuses it (PolicyViolation)
    # instead of starting it, so the spec is still not accepted when it is fixed.
    manifest = _manifest("frozen", storageSecretRef={"name": "not-allowed-by-the-policy"})
    out = _apply(kube, namespace, manifest)
    assert out.returncode == 0, out.stderr
    # Before the Job exists (nothing accepted yet), a spec may be fixed in place.
    del manifest["spec"]["storageSecretRef"]
    manifest["spec"]["lora"] = {"r": 8}
    out = _apply(kube, namespace, manifest)
    assert out.returncode == 0, out.stderr

    # The operator records the Job as Accepted=True; play it (a running operator may have done so already, or
    # may undo a status it did not write: then try again, each time with another rank).
    accepted = {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "Training Job created.",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}
    ranks = iter(range(9, 60))

    def refused() -> str | None:
        current = kube.lft(namespace, "frozen") or {}
        conditions = [c for c in (current.get("status") or {}).get("conditions", []) if c["type"] != "Accepted"]
        kube.merge_patch(kube.lft_path(namespace, "frozen", "status"), {"status": {"conditions": [*conditions, accepted]}})
        manifest["spec"]["lora"] = {"r": next(ranks)}
        out = _apply(kube, namespace, manifest)
        return out.stderr if out.returncode != 0 else None

    stderr = wait_until(refused, 30, 0.5, "the spec change refused")
    assert "spec.lora: Forbidden: spec.lora cannot change once the training Job exists" in stderr, stderr
    assert "only spec.suspend and spec.runPolicy can" in stderr

    # suspend and runPolicy stay mutable.
    path = kube.lft_path(namespace, "frozen")
    kube.merge_patch(path, {"spec": {"suspend": True, "runPolicy": {"backoffLimit": 1}}})
    stored = kube.lft(namespace, "frozen")["spec"]
    assert stored["suspend"] is True and stored["runPolicy"]["backoffLimit"] == 1
    # An optional field added after the start is a change too.
    with pytest.raises(ApiError) as changed:
        kube.merge_patch(path, {"spec": {"image": f"other:{uuid.uuid4().hex[:6]}"}})
    assert changed.value.status == 422 and "spec.image cannot change once the training Job exists" in changed.value.message


def test_kubectl_explain_lists_the_fields_with_their_descriptions(kube: Kube) -> None:
    out = _kubectl(kube, "explain", "lft.spec.lora")
    assert out.returncode == 0, out.stderr
    for field in ("r", "alpha", "dropout", "targetModules", "bias", "useDora", "quantization"):
        assert f"  {field}\t" in out.stdout, (field, out.stdout)
    assert "Rank of the LoRA update matrices" in out.stdout
    assert "LoRA adapter settings" in out.stdout
    # Core/v1 types are documented too (first paragraph of Kubernetes' own descriptions).
    out = _kubectl(kube, "explain", "lft.spec.affinity.nodeAffinity")
    assert out.returncode == 0 and "requiredDuringSchedulingIgnoredDuringExecution" in out.stdout, out.stderr
