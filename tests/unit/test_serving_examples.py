"""examples/serving/: the vLLM Deployment and the KServe InferenceService serve what the trainer writes for
examples/serving/phi3-finetune.yaml: the adapter's directory under output.uri, the base model and revision of
its adapter_config.json, the LoRA module name and the --max-lora-rank the trainer's own `vllm serve` line says.
(kubectl's client-side dry run of the files against the API server: tests/integration/test_serving_examples.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lft_api import contract
from lft_api.contract import RunIdentity
from lft_api.resource import LoRAFineTuneSpec
from lft_trainer.adapter import servability
from lft_trainer.adapter.adapter_card import servable_adapter_config, vllm_command

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "serving"
PHI3_MODULES = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]  # what PEFT saves for all-linear on Phi-3


def docs(name: str) -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d}


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
    trainer_flags: dict[str, str | None] = {"--model": command[2]}
    rest = [*command[3:], None]
    for token, following in zip(rest, rest[1:], strict=False):
        if token.startswith("--"):  # --flag value, or a switch followed by the next --flag
            trainer_flags[token] = following if following and not following.startswith("--") else None
    uri = f"{config.output.uri.rstrip('/')}/{contract.ADAPTER_DIR}"
    assert servability.check(adapter_config, "phi3").servable
    return uri, adapter_config, trainer_flags


def _container_flags(container: dict) -> dict[str, str | None]:
    assert container["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    return flags(container["args"])


def _assert_same_serving(served: dict[str, str | None], adapter_config: dict, trainer: dict, adapter_dir: str) -> None:
    assert served["--model"] == adapter_config["base_model_name_or_path"] == trainer["--model"]
    assert served["--revision"] == adapter_config["revision"] == trainer["--revision"]
    assert "--enable-lora" in served
    name, _, path = served["--lora-modules"].partition("=")
    assert name == trainer["--lora-modules"].split("=")[0] == "phi3-support-bot"
    assert path == adapter_dir
    assert served.get("--max-lora-rank") == trainer.get("--max-lora-rank") == "32"


def test_vllm_deployment_serves_the_adapter_the_trainer_writes() -> None:
    uri, adapter_config, trainer = trainer_view()
    pod = docs("vllm-deployment.yaml")["Deployment"]["spec"]["template"]["spec"]
    (fetch,) = pod["initContainers"]
    source, target = fetch["args"][-2:]
    assert source == uri == "s3://my-bucket/runs/phi3-support-bot/adapter"
    assert {"secretRef": {"name": "s3-credentials"}} in fetch["envFrom"]
    (vllm,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in vllm["volumeMounts"]}
    assert target.startswith(mounts["adapters"] + "/")
    _assert_same_serving(_container_flags(vllm), adapter_config, trainer, target)


def test_kserve_inference_service_serves_the_adapter_the_trainer_writes() -> None:
    uri, adapter_config, trainer = trainer_view()
    found = docs("kserve-inferenceservice.yaml")
    isvc = found["InferenceService"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    predictor = isvc["spec"]["predictor"]
    assert predictor["serviceAccountName"] == found["ServiceAccount"]["metadata"]["name"]
    assert found["ServiceAccount"]["secrets"] == [{"name": "s3-credentials"}]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"  # the name KServe's storage initializer mounts /mnt/models into
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["STORAGE_URI"] == uri
    _assert_same_serving(_container_flags(container), adapter_config, trainer, "/mnt/models")


@pytest.mark.parametrize("name", ["vllm-deployment.yaml", "kserve-inferenceservice.yaml"])
def test_examples_say_what_to_change(name: str) -> None:
    head = (EXAMPLES / name).read_text().split("\napiVersion")[0]
    for needle in ("What to change", "--max-lora-rank", "dry"):
        assert needle in head, (name, needle)
