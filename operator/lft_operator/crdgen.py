"""Generate the LoRAFineTune CRD from the pydantic models (the models are the source of truth).

Pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3.0 schema:
no $ref, `nullable` instead of `anyOf [X, null]`, boolean exclusiveMinimum/Maximum, no
`additionalProperties: false`, every node typed, defaults that the API server applies.

The schema is fully structural: no x-kubernetes-preserve-unknown-fields anywhere (a free-form
dict[str, Any] is refused at generation time). The core/v1 types the models pass through as
objects (affinity terms, volume kinds the policy does not read) are typed from the Kubernetes
OpenAPI (lft_api/core_v1_schemas.json, `--vendor-core-types`). So the API server
- rejects an unknown field under strict field validation, naming it (kubectl's default since 1.27:
  `.spec.lora.rnak: field not declared in schema`), and prunes it, with a warning, for clients that ask
  for less: the operator never sees one;
- publishes every field with its description (`kubectl explain lft.spec.lora`);
- checks the cross-field rules (x-kubernetes-validations, CEL) that the models declare next to the
  pydantic validators they mirror (json_schema_extra), and the immutability of the spec once the
  training Job exists (IMMUTABLE_RULES here: every field but MUTABLE_FIELDS).
Lists and strings that a rule reads are bounded (maxItems, maxLength) so that the rules' estimated
cost fits the API server's budget. Everything here needs Kubernetes >= 1.30 (CEL messageExpression,
reason and fieldPath, optional transition rules); the project supports 1.34 to 1.37.

    python -m lft_operator.crdgen            # print the CRD
    python -m lft_operator.crdgen --write    # write crds/ and the chart's files/crds/
    python -m lft_operator.crdgen --check    # exit 1 when a written file is stale
    python -m lft_operator.crdgen --vendor-core-types openapi.json
        # re-extract lft_api/core_v1_schemas.json from `kubectl get --raw /openapi/v3/api/v1` of the oldest
        # supported Kubernetes
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

import lft_api
from lft_api.conditions import ACCEPTED
from lft_api.contract import API_GROUP, API_VERSION, KIND, PLURAL
from lft_api.pod_types import CORE_SCHEMAS_FILE, CORE_TYPE
from lft_api.resource import MAX_NAME_LENGTH, MUTABLE_FIELDS, LoRAFineTuneSpec, LoRAFineTuneStatus

SINGULAR = "lorafinetune"
SHORT_NAMES = ["lft"]
CATEGORIES = ["finetune"]
CRD_NAME = f"{PLURAL}.{API_GROUP}"
CRD_FILE = f"{API_GROUP}_{PLURAL}.yaml"
REPO_ROOT = Path(__file__).resolve().parents[2]
CORE_SCHEMAS_PATH = Path(lft_api.__file__).resolve().parent / CORE_SCHEMAS_FILE
OUTPUT_PATHS = (
    REPO_ROOT / "crds" / CRD_FILE,
    REPO_ROOT / "charts" / "lora-finetune-operator" / "files" / "crds" / CRD_FILE,
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
    # Multi-node runs "ready/total", Kueue "Queued (team-a)": one JSONPath per column, so pre-formatted; wide only.
    {"name": "Nodes", "type": "string", "jsonPath": ".status.nodesDisplay", "priority": 1},
    {"name": "Adapter", "type": "string", "jsonPath": ".status.adapter.uri", "priority": 1},
    {"name": "Queue", "type": "string", "jsonPath": ".status.queue.display", "priority": 1},
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


def _core_field(node: dict[str, Any]) -> dict[str, Any]:
    """A core/v1 type passed through as an object (pod_types.core_type): typed from the Kubernetes OpenAPI;
    the field's own description wins, and it stays nullable like every optional field."""
    out = core_schema(node[CORE_TYPE])
    if node.get("description"):
        out["description"] = " ".join(node["description"].split())
    if any(v.get("type") == "null" for v in node.get("anyOf", [])):
        out["nullable"] = True
    return out


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if CORE_TYPE in node:
        return _core_field(node)
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
        # dict[str, Any] would need x-kubernetes-preserve-unknown-fields: type it (a model, or
        # pod_types.core_type for a core/v1 type).
        raise ValueError(f"free-form object {node.get('description', node)!r}: type it, the schema is structural")
    return out


# --- core/v1 types, from the Kubernetes OpenAPI (lft_api/core_v1_schemas.json) ---------------------------

_CORE_PREFIX = "io.k8s.api.core.v1."
_INT_OR_STRING = ("io.k8s.apimachinery.pkg.api.resource.Quantity", "io.k8s.apimachinery.pkg.util.intstr.IntOrString")
# PersistentVolumeClaimTemplate.metadata: "May contain labels and annotations [...]. No other fields are allowed".
_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_OBJECT_META_FIELDS = ("labels", "annotations")
_CORE_KEYS = ("type", "format", "enum", "required", "minimum", "maximum", "maxLength", "maxItems")


@functools.cache
def _core_defs() -> dict[str, Any]:
    return json.loads(CORE_SCHEMAS_PATH.read_text())["schemas"]


def _first_paragraph(text: str) -> str:
    # Kubernetes' descriptions go on with "Possible enum values", links and history: the first paragraph
    # keeps the CRD small enough for `kubectl apply` (262144 bytes of last-applied annotation).
    return " ".join(text.strip().split("\n\n")[0].split())


def core_schema(name: str, defs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The structural schema of a core/v1 type (`NodeAffinity`, or a full OpenAPI name)."""
    defs = _core_defs() if defs is None else defs
    full = name if "." in name else _CORE_PREFIX + name
    return _core_node(defs[full], defs, full)


def _core_node(node: dict[str, Any], defs: dict[str, Any], name: str = "") -> dict[str, Any]:
    node = dict(node)
    ref = node.pop("$ref", None)
    if ref is None and len(node.get("allOf", [])) == 1:
        ref = node.pop("allOf")[0].get("$ref")
    if ref is not None:
        target_name = ref.rsplit("/", 1)[-1]
        target = _core_node(defs[target_name], defs, target_name)
        if node.get("description"):
            target["description"] = _first_paragraph(node["description"])
        return target
    out: dict[str, Any] = {}
    if name in _INT_OR_STRING:
        out = {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}
    for key in _CORE_KEYS:
        if key in node and name not in _INT_OR_STRING:
            out[key] = copy.deepcopy(node[key])
    if node.get("description"):
        out["description"] = _first_paragraph(node["description"])
    properties = node.get("properties", {})
    if name == _OBJECT_META:
        properties = {k: v for k, v in properties.items() if k in _OBJECT_META_FIELDS}
    if properties:
        out["properties"] = {k: _core_node(v, defs) for k, v in properties.items()}
    if isinstance(node.get("items"), dict):
        out["items"] = _core_node(node["items"], defs)
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _core_node(node["additionalProperties"], defs)
    if "type" not in out and "x-kubernetes-int-or-string" not in out:
        raise ValueError(f"core type {name or node} has no type")
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        raise ValueError(f"core type {name or node} is free-form")
    # `format: int-or-string` and `default`s are left out: the API server would apply the defaults to the CR.
    if out.get("format") == "int-or-string":
        del out["format"]
    return out


def _core_type_names(node: Any) -> set[str]:
    """The core/v1 types the models name (pod_types.core_type)."""
    if isinstance(node, dict):
        found = {node[CORE_TYPE]} if CORE_TYPE in node else set()
        for value in node.values():
            found |= _core_type_names(value)
        return found
    if isinstance(node, list):
        return set().union(*(_core_type_names(v) for v in node)) if node else set()
    return set()


def vendor_core_types(openapi: dict[str, Any], source: str) -> dict[str, Any]:
    """The core/v1 types the models name and what they reference, from an OpenAPI v3 document of /api/v1."""
    schemas = openapi["components"]["schemas"]
    raw = LoRAFineTuneSpec.model_json_schema(by_alias=True, mode="validation")
    todo = [_CORE_PREFIX + n for n in sorted(_core_type_names(raw))]
    kept: dict[str, Any] = {}
    while todo:
        name = todo.pop()
        if name in kept:
            continue
        schema = copy.deepcopy(schemas[name])
        if name == _OBJECT_META:
            schema["properties"] = {k: v for k, v in schema["properties"].items() if k in _OBJECT_META_FIELDS}
        kept[name] = schema
        todo += re.findall(r"#/components/schemas/([\w.-]+)", json.dumps(schema))
    return {"source": source, "schemas": dict(sorted(kept.items()))}


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a pydantic model (camelCase field names)."""
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_WithFactoryDefaults)
    defs = raw.get("$defs", {})
    schema = _convert(raw, defs)
    _check_structural(schema, "")
    return schema


def _check_structural(node: dict[str, Any], path: str) -> None:
    """Fail at generation time on what the API server would reject (untyped nodes, leftover refs)."""
    if "x-kubernetes-preserve-unknown-fields" in node:
        raise ValueError(f"schema node {path or '<root>'} keeps unknown fields: the schema is structural")
    typed = "type" in node or node.get("x-kubernetes-int-or-string")
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
    # Conditions are a map keyed by type (API conventions): server-side apply merges them by type.
    conditions = status["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return status


# The training Job exists (or existed): the operator sets Accepted=True when it created it (single-pod runs
# also record status.jobName). From then on the Job carries the spec it was built from, and only
# MUTABLE_FIELDS are applied to it; a change of any other field is refused here (before, the operator
# only reported it: SpecChangeIgnored, which remains for a change that races the Job's creation).
JOB_EXISTS = (
    "has(oldSelf.status) && (has(oldSelf.status.jobName) || (has(oldSelf.status.conditions) && "
    f"oldSelf.status.conditions.exists(c, c.type == '{ACCEPTED}' && c.status == 'True')))"
)


def immutable_fields() -> list[str]:
    """Wire names of the spec's top-level fields that cannot change once the Job exists."""
    names = [f.alias or n for n, f in LoRAFineTuneSpec.model_fields.items()]
    return [n for n in names if n not in MUTABLE_FIELDS]


def immutability_rules() -> list[dict[str, Any]]:
    """Root-level transition rules (they read the status): one per immutable spec field, naming it."""
    mutable = " and ".join(f"spec.{f}" for f in MUTABLE_FIELDS)
    rules = []
    for name in immutable_fields():
        new, old = f"self.spec.{name}", f"oldSelf.spec.{name}"
        same = f"has({new}) == has({old}) && (!has({new}) || {new} == {old})"
        rules.append({
            "rule": f"!({JOB_EXISTS}) || ({same})",
            "message": (
                f"spec.{name} cannot change once the training Job exists (only {mutable} can): create a new "
                "LoRAFineTune instead (output.resumeFrom continues from one of this run's checkpoints)"
            ),
            "fieldPath": f".spec.{name}",
            "reason": "FieldValueForbidden",
        })
    return rules


def crd() -> dict[str, Any]:
    spec_schema = openapi_schema(LoRAFineTuneSpec)
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
        "x-kubernetes-validations": immutability_rules(),
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
    group.add_argument("--vendor-core-types", metavar="OPENAPI_JSON",
                       help=f"rewrite lft_api/{CORE_SCHEMAS_FILE} from `kubectl get --raw /openapi/v3/api/v1` output")
    parser.add_argument("--source", default="", help="with --vendor-core-types: where the document came from")
    args = parser.parse_args(argv)
    if args.vendor_core_types:
        vendored = vendor_core_types(json.loads(Path(args.vendor_core_types).read_text()), args.source)
        CORE_SCHEMAS_PATH.write_text(json.dumps(vendored, indent=1, sort_keys=True) + "\n")
        print(f"wrote {CORE_SCHEMAS_PATH.relative_to(REPO_ROOT)} ({len(vendored['schemas'])} types)")
        _core_defs.cache_clear()
        return 0
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
