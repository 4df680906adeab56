"""The CRD is generated from the pydantic models; the committed files must match the generator."""

from __future__ import annotations

import yaml

from lft_api.resource import LoRAFineTuneSpec
from lft_operator import crdgen


def _schema() -> dict:
    return crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(node: dict, path: str = ""):
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_committed_crd_files_match_the_generator():
    expected = crdgen.render()
    for path in crdgen.OUTPUT_PATHS:
        assert path.exists(), f"{path} missing: run python -m lft_operator.crdgen --write"
        assert path.read_text() == expected, f"{path} is stale: run python -m lft_operator.crdgen --write"
    assert crdgen.main(["--check"]) == 0


def test_names_scope_and_subresources():
    crd = yaml.safe_load(crdgen.render())
    spec = crd["spec"]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "lorafinetunes.finetune.dev"
    assert spec["group"] == "finetune.dev" and spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "LoRAFineTune",
        "listKind": "LoRAFineTuneList",
        "plural": "lorafinetunes",
        "singular": "lorafinetune",
        "shortNames": ["lft"],
        "categories": ["finetune"],
    }
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_printer_columns():
    (version,) = crdgen.crd()["spec"]["versions"]
    cols = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")] == [
        "Phase",
        "Progress",
        "Loss",
        "EvalChange",
        "ETA",
        "Age",
    ]
    assert {n for n, c in cols.items() if c.get("priority") == 1} == {"Model", "Attempts", "Nodes", "Adapter", "Queue"}
    # Kueue: "Queued (team-a)", "Preempted (team-a)"..., written pre-formatted by the operator (status/queue.py).
    assert cols["Queue"] == {"name": "Queue", "type": "string", "jsonPath": ".status.queue.display", "priority": 1}
    # Multi-node runs: ready/total, written pre-formatted by the operator (one JSONPath cannot join two fields).
    assert cols["Nodes"] == {"name": "Nodes", "type": "string", "jsonPath": ".status.nodesDisplay", "priority": 1}
    assert cols["Progress"]["jsonPath"] == ".status.progress.display"
    assert cols["ETA"]["jsonPath"] == ".status.progress.eta"
    assert cols["Loss"]["jsonPath"] == ".status.metrics.loss"
    assert cols["EvalChange"] == {"name": "EvalChange", "type": "number", "jsonPath": ".status.metrics.evalLossChange"}
    assert cols["Adapter"]["jsonPath"] == ".status.adapter.uri"
    assert cols["Age"]["type"] == "date"


def test_schema_is_structural():
    for path, node in _walk(_schema()):
        assert "$ref" not in node and "allOf" not in node and "$defs" not in node, path
        assert "title" not in node, path
        assert node.get("additionalProperties") is not False, path
        assert "x-kubernetes-preserve-unknown-fields" not in node, f"{path} keeps unknown fields"
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"untyped node {path}"
        if node.get("type") == "object":  # no free-form object: every field is declared (or a map of typed values)
            assert "properties" in node or isinstance(node.get("additionalProperties"), dict), path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), f"{path}: anyOf only for int-or-string"
        # OpenAPI v3.0: boolean exclusive bounds.
        for key in ("exclusiveMinimum", "exclusiveMaximum"):
            if key in node:
                assert node[key] is True, path


def test_bounds_defaults_and_descriptions():
    spec = _schema()["properties"]["spec"]
    lora = spec["properties"]["lora"]
    assert lora["properties"]["r"]["minimum"] == 1 and lora["properties"]["r"]["maximum"] == 1024
    assert lora["properties"]["r"]["default"] == 16
    assert lora["properties"]["quantization"]["enum"] == ["none", "4bit", "8bit"]
    assert lora["default"] == {}  # nested defaults then apply
    assert lora["description"]  # kubectl explain lft.spec.lora
    lr = spec["properties"]["training"]["properties"]["learningRate"]
    assert lr["minimum"] == 0 and lr["exclusiveMinimum"] is True
    assert set(spec["required"]) == {"model", "dataset", "output"}
    assert spec["properties"]["runPolicy"]["properties"]["backoffLimit"]["default"] == 3
    assert spec["properties"]["model"]["properties"]["revision"]["nullable"] is True
    # Core types the models pass through (lft_api.pod_types.core_type) are typed from the Kubernetes OpenAPI.
    affinity = spec["properties"]["affinity"]["properties"]
    node_affinity = affinity["nodeAffinity"]
    assert node_affinity["nullable"] is True and node_affinity["description"].startswith("core/v1 NodeAffinity")
    terms = node_affinity["properties"]["requiredDuringSchedulingIgnoredDuringExecution"]["properties"]
    expression = terms["nodeSelectorTerms"]["items"]["properties"]["matchExpressions"]["items"]
    assert expression["properties"]["operator"]["enum"] == ["DoesNotExist", "Exists", "Gt", "In", "Lt", "NotIn"]
    volume = spec["properties"]["podTemplate"]["properties"]["volumes"]["items"]["properties"]
    assert set(volume["nfs"]["properties"]) == {"path", "readOnly", "server"}
    claim_meta = volume["ephemeral"]["properties"]["volumeClaimTemplate"]["properties"]["metadata"]
    assert set(claim_meta["properties"]) == {"labels", "annotations"}  # "no other fields are allowed" there
    assert set(spec["properties"]["tolerations"]["items"]["properties"]) == {
        "key", "operator", "value", "effect", "tolerationSeconds"}
    env = spec["properties"]["podTemplate"]["properties"]["env"]["items"]["properties"]
    assert set(env["valueFrom"]["properties"]["secretKeyRef"]["properties"]) == {"name", "key", "optional"}
    assert spec["properties"]["nodeSelector"]["additionalProperties"] == {"type": "string"}
    cpu = spec["properties"]["resources"]["properties"]["cpu"]
    assert cpu["x-kubernetes-int-or-string"] is True and "pattern" in cpu
    # Every property of the spec is documented.
    for path, node in _walk(spec):
        if path and path.count("{") == 0 and not path.endswith("[]"):
            assert node.get("description"), f"spec{path} has no description"


def test_status_schema_has_no_defaults_and_conditions_are_a_map():
    status = _schema()["properties"]["status"]
    for path, node in _walk(status):
        assert "default" not in node, path
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]
    for field in ("progress", "metrics", "latestCheckpoint", "adapter", "attempts", "observedGeneration"):
        assert field in status["properties"], field


def test_name_length_is_limited_for_the_job_label():
    meta = _schema()["properties"]["metadata"]
    assert meta["properties"]["name"]["maxLength"] == 63 - len("-trainer")


def test_every_spec_field_is_in_the_schema():
    spec = _schema()["properties"]["spec"]["properties"]
    for name, field in LoRAFineTuneSpec.model_fields.items():
        assert (field.alias or name) in spec


def test_no_object_keeps_unknown_fields():
    """Structural all the way down: the API server refuses (strict field validation) or prunes an unknown field
    anywhere, so `spec.lora.rnak` never reaches the operator, and OpenAPI v2 and v3 list every field."""
    text = crdgen.render()
    assert "x-kubernetes-preserve-unknown-fields" not in text
    spec = _schema()["properties"]["spec"]
    typed = {p for p, node in _walk(spec, "spec") if node.get("type") == "object" and "properties" in node}
    assert {"spec", "spec.lora", "spec.training", "spec.output", "spec.runPolicy", "spec.podTemplate",
            "spec.affinity.nodeAffinity", "spec.podTemplate.volumes[].csi"} <= typed
    assert spec["properties"]["lora"]["properties"]["r"]["type"] == "integer"
