"""The serving examples against what they run on, without a cluster or a GPU: every `vllm serve` option against
the parser of the pinned vLLM release (tests/fixtures/vllm/, read from its wheel), --max-lora-rank against the
ranks that release takes and the example adapter's rank, and the LLMInferenceService against the
openAPIV3Schema of KServe's CRD (tests/fixtures/crds/), strict about unknown fields as the API server is."""

from __future__ import annotations

import copy
import json
import re

import jsonschema
import pytest

from lft_api.resource import LoRAFineTuneSpec
from lft_trainer.adapter import servability
from tests.support.serving import (
    REPO,
    VLLM_IMAGE,
    docs,
    kserve_crd,
    option_names,
    unknown_vllm_options,
    version_schema,
    vllm_interface,
)

VLLM_CONTAINERS = {  # example file -> the path to its vLLM container
    "vllm-deployment.yaml": lambda found: found["Deployment"]["spec"]["template"]["spec"]["containers"][0],
    "kserve-llminferenceservice.yaml": lambda found: found["LLMInferenceService"]["spec"]["template"]["containers"][0],
}


def serve_argv(name: str) -> list[str]:
    container = VLLM_CONTAINERS[name](docs(name))
    assert container["image"] == VLLM_IMAGE, "the image runs the vLLM release the flags were read from"
    assert container["command"][:2] == ["vllm", "serve"]
    return [*container["command"][2:], *container["args"]]


@pytest.mark.parametrize("name", sorted(VLLM_CONTAINERS))
def test_each_vllm_option_is_one_the_pinned_release_defines(name: str) -> None:
    argv = serve_argv(name)
    assert {"--enable-lora", "--lora-modules", "--max-lora-rank", "--max-loras"} <= set(option_names(argv))
    assert unknown_vllm_options(argv) == []


def test_an_option_vllm_does_not_define_is_caught() -> None:
    argv = serve_argv("vllm-deployment.yaml")
    assert unknown_vllm_options([*argv, "--lora-module=x=/a", "--max-lora-ranks=32"]) == [
        "--lora-module", "--max-lora-ranks"]
    assert "--model" in vllm_interface()["serve_options"]  # the list is vLLM's parser, not an empty set


@pytest.mark.parametrize("name", sorted(VLLM_CONTAINERS))
def test_max_lora_rank_admits_the_example_adapter(name: str) -> None:
    value = int(dict(a.split("=", 1) for a in serve_argv(name) if "=" in a)["--max-lora-rank"])
    rank = LoRAFineTuneSpec.model_validate(docs("phi3-finetune.yaml")["LoRAFineTune"]["spec"]).lora.r
    assert value in vllm_interface()["max_lora_ranks"]
    assert value >= rank
    assert value == servability.max_lora_rank_for(rank)  # what the trainer's servability report tells users


def test_the_trainers_servability_report_uses_the_pinned_releases_ranks() -> None:
    assert list(servability.VLLM_MAX_LORA_RANKS) == vllm_interface()["max_lora_ranks"]


def test_runtime_loading_in_the_docs_is_the_pinned_releases() -> None:
    interface, text = vllm_interface(), (REPO / "docs" / "serving.md").read_text()
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" in interface["env"] and "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in text
    assert "POST /v1/load_lora_adapter" in interface["lora_routes"] and "/v1/load_lora_adapter" in text
    (body,) = re.findall(r"/v1/load_lora_adapter \\\n.*-d '(\{.*\})'", text)
    assert set(json.loads(body)) == {"lora_name", "lora_path"} <= set(interface["load_lora_adapter_fields"])


def _llmisvc() -> dict:
    return docs("kserve-llminferenceservice.yaml")["LLMInferenceService"]


def _validate(doc: dict) -> None:
    version = doc["apiVersion"].split("/")[1]
    jsonschema.Draft4Validator(version_schema(kserve_crd(), version)).validate(doc)


@pytest.mark.parametrize("version", ["v1alpha1", "v1alpha2"])
def test_llm_inference_service_matches_kserves_schema(version: str) -> None:
    crd = kserve_crd()
    assert crd["spec"]["names"]["kind"] == "LLMInferenceService"
    doc = _llmisvc()
    doc["apiVersion"] = f"serving.kserve.io/{version}"  # the example as written, and as KServe 0.17 stores it
    _validate(doc)


@pytest.mark.parametrize(("path", "wrong", "message"), [
    (("spec", "model"), {"url": "s3://b/m"}, "'url' was unexpected"),
    (("spec", "template", "containers", 0), {"arg": ["--enable-lora"]}, "'arg' was unexpected"),
    (("spec",), {"replicas": "one"}, "'one' is not of type 'integer'"),
])
def test_the_schema_check_catches_a_wrong_field(path: tuple, wrong: dict, message: str) -> None:
    doc = copy.deepcopy(_llmisvc())
    node = doc
    for key in path:
        node = node[key]
    node.update(wrong)
    with pytest.raises(jsonschema.ValidationError, match=re.escape(message)):
        _validate(doc)
