"""examples/serving/: the vLLM Deployment and the KServe LLMInferenceService serve what the trainer writes for
examples/serving/phi3-finetune.yaml: the adapter's directory under output.uri, the base model and revision of
its adapter_config.json, the LoRA module name and the --max-lora-rank the trainer's own `vllm serve` line says.
(Each flag against the pinned vLLM release and the LLMInferenceService against KServe's CRD schema:
tests/unit/test_serving_schemas.py; through a real API server: tests/integration/test_serving_examples.py.)"""

from __future__ import annotations

import pytest

from lft_api import contract
from lft_api.contract import RunIdentity
from lft_api.resource import LoRAFineTuneSpec
from lft_trainer.adapter import servability
from lft_trainer.adapter.adapter_card import servable_adapter_config, vllm_command
from tests.support.serving import EXAMPLES, docs

PHI3_MODULES = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]  # what PEFT saves for all-linear on Phi-3


def flags(args: list[str]) -> dict[str, str | None]:
    """{--flag: value} of an argument list in --flag=value / --flag form."""
    out: dict[str, str | None] = {}
    for a in args:
        key, _, value = a.partition("=")
        out[key] = value or None
    return out


def trainer_view() -> tuple[str, dict, dict[str, str | None]]:
    """(the adapter URI, adapter_config.json, the flags of the trainer's vllm command) for the example run."""
    finetune = docs("phi3-finetune.yaml")["LoRAFineTune"]
    spec = LoRAFineTuneSpec.model_validate(finetune["spec"])
    config = spec.trainer_config()
    saved = {"r": config.lora.r, "lora_alpha": config.lora.alpha, "target_modules": PHI3_MODULES, "bias": "none",
             "use_dora": False, "base_model_name_or_path": "/tmp/lft-work-x/model"}
    adapter_config = servable_adapter_config(saved, config.model.name, config.model.revision)
    identity = RunIdentity(name=finetune["metadata"]["name"], namespace="team", uid="u", spec_hash="h")
    command = vllm_command(config, identity, adapter_config).split()
    assert command[:2] == ["vllm", "serve"]
    trainer_flags: dict[str, str | None] = {"model": command[2]}
    rest = [*command[3:], None]
    for token, following in zip(rest, rest[1:], strict=False):
        if token.startswith("--"):  # --flag value, or a switch followed by the next --flag
            trainer_flags[token] = following if following and not following.startswith("--") else None
    uri = f"{config.output.uri.rstrip('/')}/{contract.ADAPTER_DIR}"
    assert servability.check(adapter_config, "phi3").servable
    return uri, adapter_config, trainer_flags


def _assert_same_lora(served: dict[str, str | None], trainer: dict, adapter_dir: str) -> None:
    assert "--enable-lora" in served
    name, _, path = (served["--lora-modules"] or "").partition("=")
    assert name == trainer["--lora-modules"].split("=")[0] == "phi3-support-bot"
    assert path == adapter_dir
    assert served.get("--max-lora-rank") == trainer.get("--max-lora-rank") == "32"


def _fetched(pod: dict) -> tuple[str, str, dict[str, str]]:
    """(source, target, env) of the init container that copies the adapter from the bucket."""
    (fetch,) = [c for c in pod["initContainers"] if c["name"] == "fetch-adapter"]
    assert fetch["args"][:2] == ["s3", "cp"]
    assert {"secretRef": {"name": "s3-credentials"}} in fetch["envFrom"]  # the Secret the LoRAFineTune names
    source, target = fetch["args"][-2:]
    mounts = {m["name"]: m["mountPath"] for m in fetch["volumeMounts"]}
    assert target.startswith(mounts["adapters"] + "/")
    return source, target, mounts


def test_vllm_deployment_serves_the_adapter_the_trainer_writes() -> None:
    uri, adapter_config, trainer = trainer_view()
    pod = docs("vllm-deployment.yaml")["Deployment"]["spec"]["template"]["spec"]
    source, target, fetch_mounts = _fetched(pod)
    assert source == uri == "s3://my-bucket/runs/phi3-support-bot/adapter"
    (vllm,) = pod["containers"]
    assert vllm["command"] == ["vllm", "serve"]
    model, *args = vllm["args"]
    assert model == adapter_config["base_model_name_or_path"] == trainer["model"]
    served = flags(args)
    assert served["--revision"] == adapter_config["revision"] == trainer["--revision"]
    assert {m["name"]: m["mountPath"] for m in vllm["volumeMounts"]}["adapters"] == fetch_mounts["adapters"]
    _assert_same_lora(served, trainer, target)


def test_kserve_llm_inference_service_serves_the_adapter_the_trainer_writes() -> None:
    uri, adapter_config, trainer = trainer_view()
    found = docs("kserve-llminferenceservice.yaml")
    llmisvc = found["LLMInferenceService"]
    assert llmisvc["apiVersion"] == "serving.kserve.io/v1alpha1"
    model, pod = llmisvc["spec"]["model"], llmisvc["spec"]["template"]
    assert model["uri"].startswith("s3://")  # the base too comes from the bucket (the storage initializer)
    assert model["lora"]["adapters"] == [{"name": "phi3-support-bot", "uri": uri}]
    assert pod["serviceAccountName"] == found["ServiceAccount"]["metadata"]["name"]
    assert found["ServiceAccount"]["secrets"] == [{"name": "s3-credentials"}]
    source, target, fetch_mounts = _fetched(pod)
    assert source == uri
    (main,) = pod["containers"]
    assert main["name"] == "main"  # the container KServe merges its template into and mounts /mnt/models into
    assert main["command"] == ["vllm", "serve", "/mnt/models"]
    served = flags(main["args"])
    assert served["--served-model-name"] == model["name"] == adapter_config["base_model_name_or_path"]
    assert {m["name"]: m["mountPath"] for m in main["volumeMounts"]}["adapters"] == fetch_mounts["adapters"]
    _assert_same_lora(served, trainer, target)


@pytest.mark.parametrize("name", ["vllm-deployment.yaml", "kserve-llminferenceservice.yaml"])
def test_examples_say_what_to_change(name: str) -> None:
    head = (EXAMPLES / name).read_text().split("\napiVersion")[0]
    for needle in ("What to change", "--max-lora-rank", "dry-run=server"):
        assert needle in head, (name, needle)
