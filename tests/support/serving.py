"""The serving examples (examples/serving/) and what they are checked against: the vendored KServe CRD
(tests/fixtures/crds/) and the interface of the pinned vLLM release (tests/fixtures/vllm/). Used by
tests/unit/test_serving_examples.py, tests/unit/test_serving_schemas.py and tests/integration/test_serving_examples.py."""

from __future__ import annotations

import copy
import gzip
import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "serving"
FIXTURES = REPO / "tests" / "fixtures"
KSERVE_VERSION = "v0.17.0"
KSERVE_CRD = FIXTURES / "crds" / f"kserve-{KSERVE_VERSION}-serving.kserve.io_llminferenceservices.yaml.gz"
VLLM_VERSION = "0.34.0"
VLLM_INTERFACE = FIXTURES / "vllm" / f"vllm-{VLLM_VERSION}-serve.json"
VLLM_IMAGE = f"vllm/vllm-openai:v{VLLM_VERSION}"


def docs(name: str) -> dict[str, dict]:
    """The objects of an example file, by kind."""
    return {d["kind"]: d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d}


@cache
def kserve_crd_text() -> str:
    return gzip.decompress(KSERVE_CRD.read_bytes()).decode()


def kserve_crd() -> dict[str, Any]:
    return yaml.load(kserve_crd_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@cache
def vllm_interface() -> dict[str, Any]:
    return json.loads(VLLM_INTERFACE.read_text())


def option_names(argv: list[str]) -> list[str]:
    """The --options of a command line in --flag=value / --flag value form (values and positionals left out)."""
    return [a.split("=", 1)[0] for a in argv if a.startswith("-")]


def unknown_vllm_options(argv: list[str]) -> list[str]:
    """The options of a `vllm serve` command line that the pinned vLLM release's parser does not define."""
    known = set(vllm_interface()["serve_options"])
    return [o for o in option_names(argv) if o not in known]


def version_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    """The openAPIV3Schema of one version of a CRD, made strict: an object schema that lists its properties
    and does not preserve unknown fields refuses others, as the API server's strict field validation does
    (kubectl's default); plain JSON Schema would ignore them."""
    (found,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return strict(copy.deepcopy(found["schema"]["openAPIV3Schema"]))


def strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "properties":
                for sub in value.values():
                    strict(sub)
            elif key != "enum" and key != "default" and key != "example":
                strict(value)
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema.setdefault("additionalProperties", False)
    elif isinstance(schema, list):
        for item in schema:
            strict(item)
    return schema
