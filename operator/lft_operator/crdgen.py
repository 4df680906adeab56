"""Generate the LoRAFineTune CRD from the pydantic models (the models are the source of truth).

Pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3.0 schema:
no $ref, `nullable` instead of `anyOf [X, null]`, boolean exclusiveMinimum/Maximum, no
`additionalProperties: false`, every node typed (free-form objects say
x-kubernetes-preserve-unknown-fields), defaults that the API server applies.

Unknown fields in the spec are kept, not pruned: the spec and each of its typed objects say
x-kubernetes-preserve-unknown-fields: true (known fields stay typed and validated), and the
operator refuses a resource that has any (UnknownField, with the paths). Pruning would drop a
typo such as `lora: {rank: 4}` silently for every client that does not validate on its own
(kubectl does; API libraries do not), and the run would train with the default instead.
The cost: the OpenAPI v2 the API server publishes drops the fields of such objects, so
`kubectl explain lft.spec.lora` lists them only where kubectl reads OpenAPI v3 (kubectl and
Kubernetes >= 1.27); on 1.20 it shows the object's description only.
Every construct used here is accepted by apiextensions.k8s.io/v1 on Kubernetes 1.20.

    python -m lft_operator.crdgen            # print the CRD
    python -m lft_operator.crdgen --write    # write crds/ and the chart's crds/
    python -m lft_operator.crdgen --check    # exit 1 when a written file is stale
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

from lft_api.contract import API_GROUP, API_VERSION, KIND, PLURAL
from lft_api.resource import MAX_NAME_LENGTH, LoRAFineTuneSpec, LoRAFineTuneStatus

SINGULAR = "lorafinetune"
SHORT_NAMES = ["lft"]
CATEGORIES = ["finetune"]
CRD_NAME = f"{PLURAL}.{API_GROUP}"
CRD_FILE = f"{API_GROUP}_{PLURAL}.yaml"
REPO_ROOT = Path(__file__).resolve().parents[2]
OUTPUT_PATHS = (
    REPO_ROOT / "crds" / CRD_FILE,
    REPO_ROOT / "charts" / "lora-finetune-operator" / "crds" / CRD_FILE,
)

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress.display"},
    {"name": "Loss", "type": "number", "jsonPath": ".status.metrics.loss"},
    # Eval loss after - before: negative when the fine-tune helped (set when the run ends).
    {"name": "EvalChange", "type": "number", "jsonPath": ".status.metrics.evalLossChange"},
    {"name": "ETA", "type": "string", "jsonPath": ".status.progress.eta"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.name", "priority": 1},
    {"name": "Attempts", "type": "integer", "jsonPath": ".status.attempts", "priority": 1},
    # Multi-node runs: "ready/total". A column is one simple JSONPath (kubectl cannot join two fields), so the
    # operator writes the pair pre-formatted; wide only: single-pod runs leave it empty.
    {"name": "Nodes", "type": "string", "jsonPath": ".status.nodesDisplay", "priority": 1},
    {"name": "Adapter", "type": "string", "jsonPath": ".status.adapter.uri", "priority": 1},
]


class _WithFactoryDefaults(GenerateJsonSchema):
    """Also emit defaults of default_factory fields, so the API server fills them in.

    A nested model defaults to {}: the API server then applies the nested fields' own defaults.
    """

    def default_schema(self, schema: Any) -> Any:
        factory = schema.get("default_factory")
        if factory is None or schema.get("default_factory_takes_data"):
            return super().default_schema(schema)
        inner = self.generate_inner(schema["schema"])
        value = factory()
        if isinstance(value, BaseModel):
            value = {}
        if "$ref" in inner:
            return {"allOf": [inner], "default": value}
        return {**inner, "default": value}


_DROP_KEYS = {"title", "additionalProperties", "$defs", "discriminator"}


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = dict(node)
    # $ref (or a single allOf, pydantic's way of adding siblings to a $ref): inline the target;
    # the referring property's own keys (description, default) win over the model's.
    ref = node.pop("$ref", None)
    if ref is None and len(node.get("allOf", [])) == 1:
        ref = node.pop("allOf")[0].get("$ref")
    if ref is not None:
        target = _convert(defs[ref.rsplit("/", 1)[-1]], defs)
        siblings = _convert(node, defs) if node else {}
        siblings.pop("type", None) if not siblings.get("type") else None
        return {**target, **siblings}

    out: dict[str, Any] = {}
    any_of = node.pop("anyOf", None)
    if any_of is not None:
        variants = [v for v in any_of if v.get("type") != "null"]
        if len(variants) < len(any_of):
            out["nullable"] = True
        types = sorted(v.get("type", "") for v in variants)
        if types == ["integer", "string"]:
            # resource.Quantity style: the only anyOf a structural schema allows.
            out["x-kubernetes-int-or-string"] = True
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        elif len(variants) == 1:
            out.update(_convert(variants[0], defs))
        else:
            raise ValueError(f"cannot express anyOf {any_of} in a structural schema")

    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "properties":
            out["properties"] = {k: _convert(v, defs) for k, v in value.items()}
        elif key == "items":
            out["items"] = _convert(value, defs)
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            # 2020-12 numeric form -> OpenAPI 3.0 boolean form.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "const":
            out["enum"] = [value]
        elif key == "default" and value is None:
            continue
        elif key == "description":
            out[key] = " ".join(value.split())  # docstrings carry line breaks and indentation
        else:
            out[key] = value

    additional = node.get("additionalProperties")
    if isinstance(additional, dict) and additional:
        out["additionalProperties"] = _convert(additional, defs)
    elif out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        # dict[str, Any]: a free-form object (Kubernetes core types such as affinity).
        out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("type") == "array" and out.get("items", {}).get("type") == "object":
        items = out["items"]
        if "properties" not in items and "additionalProperties" not in items:
            items["x-kubernetes-preserve-unknown-fields"] = True
    return out


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a pydantic model (camelCase field names)."""
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_WithFactoryDefaults)
    defs = raw.get("$defs", {})
    schema = _convert(raw, defs)
    _check_structural(schema, "")
    return schema


def _check_structural(node: dict[str, Any], path: str) -> None:
    """Fail at generation time on what the API server would reject (untyped nodes, leftover refs)."""
    typed = "type" in node or node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    if not typed:
        raise ValueError(f"schema node {path or '<root>'} has no type: {node}")
    if "$ref" in node or "allOf" in node:
        raise ValueError(f"schema node {path} still has a reference")
    for name, child in node.get("properties", {}).items():
        _check_structural(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        _check_structural(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        _check_structural(node["additionalProperties"], f"{path}{{}}")


def _without_defaults(node: Any) -> Any:
    """Status has no defaults: the API server would add them to every object it reads."""
    if isinstance(node, dict):
        return {k: _without_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_without_defaults(v) for v in node]
    return node


def _with_conditions_list_map(status: dict[str, Any]) -> dict[str, Any]:
    # Conditions are a map keyed by type (API conventions); list-map is accepted by 1.20.
    conditions = status["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return status


def _keeping_unknown_fields(node: dict[str, Any]) -> dict[str, Any]:
    """Every typed object of the spec keeps unknown fields (the operator reports them)."""
    if node.get("type") == "object" and "properties" in node:
        node["x-kubernetes-preserve-unknown-fields"] = True
    for child in node.get("properties", {}).values():
        _keeping_unknown_fields(child)
    if isinstance(node.get("items"), dict):
        _keeping_unknown_fields(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        _keeping_unknown_fields(node["additionalProperties"])
    return node


def crd() -> dict[str, Any]:
    spec_schema = _keeping_unknown_fields(openapi_schema(LoRAFineTuneSpec))
    status_schema = _with_conditions_list_map(_without_defaults(openapi_schema(LoRAFineTuneStatus)))
    root = {
        "type": "object",
        "description": (
            "LoRAFineTune fine-tunes a language model with LoRA: the operator runs a training Job, resumes it from "
            "checkpoints after preemption or suspend, and reports progress, metrics and the adapter in status."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            # Only name may be restricted here: the Job "<name>-trainer" must fit a 63-character label value.
            "metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": MAX_NAME_LENGTH}}},
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {
                "app.kubernetes.io/name": "lora-finetune-operator",
                "app.kubernetes.io/part-of": "lora-finetune",
            },
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": copy.deepcopy(PRINTER_COLUMNS),
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


HEADER = "# Generated by `python -m lft_operator.crdgen --write` from api/lft_api/resource.py. Do not edit.\n"


class _PlainDumper(yaml.SafeDumper):
    """No &anchors/*aliases where the schema shares an object (e.g. SecretRef's `required`)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render() -> str:
    return HEADER + yaml.dump(crd(), Dumper=_PlainDumper, sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="write the CRD files")
    group.add_argument("--check", action="store_true", help="fail when a CRD file differs from the generator")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        for path in OUTPUT_PATHS:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO_ROOT)}")
        return 0
    if args.check:
        stale = [p for p in OUTPUT_PATHS if not p.exists() or p.read_text() != text]
        for path in stale:
            print(f"stale: {path.relative_to(REPO_ROOT)} (run python -m lft_operator.crdgen --write)", file=sys.stderr)
        return 1 if stale else 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
