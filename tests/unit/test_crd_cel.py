"""The CRD's CEL rules (x-kubernetes-validations) and what keeps them within the API server's cost budget.

The rules are evaluated by a real API server in tests/integration/test_crd_server_validation.py; here: each
rule is in the generated schema where it belongs, with a message naming the field, bounded inputs, and the
operator's second line (pydantic, validation.py) refusing the same specs.
"""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from lft_api.resource import MUTABLE_FIELDS, LoRAFineTuneSpec
from lft_api.spec_base import ratcheting_rule
from lft_operator import crdgen
from lft_operator.validation import validate

BASE = {"model": {"name": "m"}, "dataset": {"uri": "d"}, "output": {"uri": "s3://b/p"}}


def _root() -> dict:
    return crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _spec() -> dict:
    return _root()["properties"]["spec"]


def _rules(node: dict) -> list[dict]:
    return node.get("x-kubernetes-validations", [])


def _all_rules(node: dict, path: str = ""):
    for rule in _rules(node):
        yield path, rule
    for name, child in node.get("properties", {}).items():
        yield from _all_rules(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _all_rules(node["items"], f"{path}[]")


def test_cross_field_rules_of_the_spec():
    by_field = {r["fieldPath"]: r for r in _rules(_spec())}
    assert set(by_field) == {".training.assistantOnlyLoss", ".lora.quantization", ".training.numProcesses",
                             ".training.optimizer", ".dataset.mixture", ".lora.init",
                             ".training.earlyStopping"}
    assert "self.dataset.mixture.all(s, !has(s.format) || s.format != 'text')" in by_field[".dataset.mixture"]["rule"]
    assert "self.lora.init == 'default'" in by_field[".lora.init"]["rule"]  # model.adapter or a new adapter's init
    lora_rules = _rules(_spec()["properties"]["lora"])
    assert [r["fieldPath"] for r in lora_rules] == [".init"] and "self.quantization == 'none'" in lora_rules[0]["rule"]
    assert "pattern" in _spec()["properties"]["model"]["properties"]["adapter"]
    assert "self.dataset.format != 'text'" in by_field[".training.assistantOnlyLoss"]["rule"]
    assert "has(self.training.evalSteps)" in by_field[".training.earlyStopping"]["rule"]
    assert "self.resources.gpus >= 1" in by_field[".lora.quantization"]["rule"]
    assert "self.training.numProcesses == self.resources.gpus" in by_field[".training.numProcesses"]["rule"]
    for path, rule in by_field.items():  # they ratchet on the fields they read (see test_ratcheting_rule)
        if path == ".dataset.mixture":  # but this one: it came with the field (no stored resource has one)
            assert "oldSelf" not in rule["rule"] and "optionalOldSelf" not in rule
            continue
        assert rule["optionalOldSelf"] is True and rule["rule"].startswith("(oldSelf.hasValue() && ")


def test_rules_of_training_tracking_and_pod_template():
    spec = _spec()["properties"]
    training = spec["training"]
    rules = {(r.get("fieldPath"), r["message"]) for r in _rules(training)}
    assert (".mlflow", "training.reportTo lists mlflow: set training.mlflow (its settings)") in rules
    assert (".wandb", "training.reportTo lists wandb: set training.wandb (its settings)") in rules
    assert any(path == ".mlflow" and "does not list mlflow" in message for path, message in rules)
    assert training["properties"]["reportTo"]["x-kubernetes-list-type"] == "set"  # duplicates: the server refuses
    assert training["properties"]["reportTo"]["maxItems"] == 3
    processes = training["properties"]["numProcesses"]
    assert processes["x-kubernetes-int-or-string"] is True
    (rule,) = _rules(processes)
    assert rule["rule"] == "type(self) == string ? self == 'auto' : (self >= 1 && self <= 64)"
    uri = training["properties"]["mlflow"]["properties"]["trackingUri"]
    assert uri["maxLength"] == 2048 and "self.matches(" in _rules(uri)[0]["rule"]
    pod = spec["podTemplate"]
    (mounts,) = _rules(pod)
    assert mounts["fieldPath"] == ".volumeMounts" and "self.volumes.exists(v, v.name == m.name)" in mounts["rule"]
    # What the rule iterates over is bounded, or the API server refuses the CRD (estimated cost over budget).
    for name in ("volumes", "volumeMounts"):
        assert pod["properties"][name]["maxItems"] == 64
        assert pod["properties"][name]["items"]["properties"]["name"]["maxLength"] == 63


def test_spec_is_immutable_once_the_job_exists_except_the_mutable_fields():
    rules = {r["fieldPath"]: r for r in _rules(_root())}
    fields = [f.alias or n for n, f in LoRAFineTuneSpec.model_fields.items()]
    assert set(rules) == {f".spec.{f}" for f in fields if f not in MUTABLE_FIELDS}
    assert {"suspend", "runPolicy"} == set(MUTABLE_FIELDS)
    for path, rule in rules.items():
        name = path.removeprefix(".spec.")
        assert rule["rule"].startswith(f"!({crdgen.JOB_EXISTS}) || ")
        assert f"has(self.spec.{name}) == has(oldSelf.spec.{name})" in rule["rule"]  # set or unset is a change
        assert rule["reason"] == "FieldValueForbidden"
        assert rule["message"].startswith(f"spec.{name} cannot change once the training Job exists")
    assert "c.type == 'Accepted' && c.status == 'True'" in crdgen.JOB_EXISTS and "status.jobName" in crdgen.JOB_EXISTS
    conditions = _root()["properties"]["status"]["properties"]["conditions"]
    assert conditions["maxItems"] == 16 and conditions["items"]["properties"]["type"]["maxLength"] == 64


def test_every_rule_has_a_message_that_names_its_field():
    found = list(_all_rules(_root()))
    assert len(found) >= 29
    for path, rule in found:
        message = rule.get("message") or rule.get("messageExpression")
        assert message, (path, rule)
        assert set(rule) <= {"rule", "message", "messageExpression", "fieldPath", "reason", "optionalOldSelf"}
        # transition rules (oldSelf) other than the optional ones sit where the field always exists
        if "oldSelf" in rule["rule"] and not rule.get("optionalOldSelf"):
            assert path == "", path


def test_ratcheting_rule():
    rule = ratcheting_rule("self.a.b > 0", reads=("a.b", "c"), message="m")
    assert rule == {
        "rule": "(oldSelf.hasValue() && has(self.a.b) == has(oldSelf.value().a.b) && (!has(self.a.b) || "
                "self.a.b == oldSelf.value().a.b) && has(self.c) == has(oldSelf.value().c) && (!has(self.c) || "
                "self.c == oldSelf.value().c)) || (self.a.b > 0)",
        "optionalOldSelf": True,
        "message": "m",
    }


@pytest.mark.parametrize("overrides", [
    {"lora": {"quantization": "4bit"}},
    {"training": {"optimizer": "paged_adamw_8bit"}},
    {"training": {"warmupSteps": 3, "warmupRatio": 0.1}},
    {"training": {"minLearningRate": 1e-5, "scheduler": "linear"}},
    {"training": {"minLearningRate": 1e-3, "learningRate": 1e-4}},
    {"dataset": {"uri": "d", "format": "text"}, "training": {"assistantOnlyLoss": True}},
    {"dataset": {"mixture": [{"uri": "d", "weight": 1, "format": "text"}]}, "training": {"assistantOnlyLoss": True}},
    {"dataset": {"uri": "d", "mixture": [{"uri": "e", "weight": 1}]}},
    {"training": {"reportTo": ["mlflow"]}},
    {"training": {"reportTo": ["wandb", "wandb"], "wandb": {"project": "p"}}},
    {"training": {"wandb": {"project": "p"}}},
    {"training": {"numProcesses": 4}, "resources": {"gpus": 2}},
    {"training": {"numProcesses": 65}},
    {"training": {"earlyStopping": {"patience": 2}}},
    {"training": {"extra": {"learning_rate": "0.1"}}},
    {"training": {"extra": {"hub_model_id": "me/adapter"}}},
    {"podTemplate": {"volumeMounts": [{"name": "data", "mountPath": "/data"}]}},
    {"training": {"reportTo": ["mlflow"], "mlflow": {"trackingUri": "http://user:pw@mlflow:5000"}}},
    {"podTemplate": {"volumes": [{"name": f"v{i}"} for i in range(65)]}},
    {"lora": {"init": "pissa", "quantization": "4bit"}, "resources": {"gpus": 1}},
    {"lora": {"init": "olora", "useDora": True}},
    {"model": {"name": "m", "adapter": "s3://b/a"}, "lora": {"init": "pissa"}},
    {"model": {"name": "m", "adapter": "an-adapter-name"}},
])
def test_the_operator_refuses_what_the_rules_refuse(overrides):
    """The second line (resources stored before the rules, an older CRD): the same specs are not accepted."""
    spec, problems = validate({**BASE, **overrides}, "run")
    assert spec is None or problems, overrides


def test_core_types_are_vendored_from_the_oldest_supported_kubernetes():
    vendored = json.loads(crdgen.CORE_SCHEMAS_PATH.read_text())
    assert vendored["source"].startswith("kube-apiserver v1.34.")
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry" not in vendored["schemas"]  # FieldsV1: free-form
    raw = LoRAFineTuneSpec.model_json_schema(by_alias=True, mode="validation")
    for name in crdgen._core_type_names(raw):
        assert crdgen._CORE_PREFIX + name in vendored["schemas"], name
    # Regenerating from the same document gives the same file.
    openapi = {"components": {"schemas": vendored["schemas"]}}
    assert crdgen.vendor_core_types(openapi, vendored["source"]) == vendored


def test_a_free_form_object_is_refused_at_generation():
    class Loose(BaseModel):
        blob: dict[str, object] = {}

    with pytest.raises(ValueError, match="free-form object"):
        crdgen.openapi_schema(Loose)
