"""The adapter as a deliverable (pure): adapter_config.json names the base as given, the vLLM servability
check with each reason, how to load it, and the model card."""

from __future__ import annotations

import json

import pytest

from lft_api.contract import RunIdentity, Servability, TerminationMessage
from lft_api.spec import TrainerConfig
from lft_trainer.adapter import servability
from lft_trainer.adapter.adapter_card import (
    finish_adapter,
    how_to_load,
    model_card,
    servable_adapter_config,
    vllm_command,
)

ME = RunIdentity(namespace="team", name="ft-b", uid="uid-b", spec_hash="h1")
PHI3 = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
ADAPTER = "s3://b/run/adapter"


def config(name: str = "microsoft/Phi-3-mini-4k-instruct", revision: str | None = None, **lora) -> TrainerConfig:
    return TrainerConfig.model_validate({"model": {"name": name, "revision": revision}, "dataset": {"uri": "d"},
                                         "output": {"uri": "s3://b/run"}, "lora": lora})


def saved(**kw) -> dict:
    """adapter_config.json as PEFT writes it for all-linear on Phi-3 (the subset the check reads)."""
    return {"base_model_name_or_path": "/tmp/lft-work-x/model", "revision": None, "r": 16, "lora_alpha": 32,
            "bias": "none", "use_dora": False, "modules_to_save": None, "target_modules": PHI3,
            "peft_type": "LORA", "task_type": "CAUSAL_LM", **kw}


def test_adapter_config_names_the_base_as_given_and_its_revision():
    out = servable_adapter_config(saved(), "s3://models/phi3", "abc123")
    assert out["base_model_name_or_path"] == "s3://models/phi3" and out["revision"] == "abc123"
    assert out["r"] == 16 and out["target_modules"] == PHI3  # everything else as PEFT wrote it


def test_the_default_phi3_adapter_is_servable():
    verdict = servability.check(saved(), "phi3")
    assert verdict == Servability(engine="vLLM", servable=True, reasons=[], notes=[])
    assert verdict.describe() == "vLLM can serve the adapter."


@pytest.mark.parametrize(("changes", "model_type", "expected"), [
    ({"r": 1024}, "phi3", "LoRA rank 1024 is above vLLM's maximum --max-lora-rank 512"),
    ({"r": 8, "rank_pattern": {"qkv_proj": 600}}, "phi3", "LoRA rank 600 is above"),
    ({"use_dora": True}, "phi3", "DoRA (lora.useDora) is not supported by vLLM"),
    ({"bias": "lora_only"}, "phi3", "LoRA bias (lora.bias: lora_only) is not supported by vLLM"),
    ({"modules_to_save": ["lm_head"]}, "phi3", "modules_to_save (lm_head) is not supported by vLLM"),
    ({"target_modules": [*PHI3, "lm_head"]}, "phi3", "vLLM does not apply LoRA to lm_head (it adapts down_proj"),
    ({"target_modules": ["q_proj", "v_proj"]}, "phi3", "vLLM does not apply LoRA to q_proj, v_proj"),
    ({"target_modules": ["embed_tokens", "q_proj"]}, "gpt2", "vLLM does not apply LoRA to embed_tokens"),
])
def test_each_reason_makes_the_adapter_not_servable(changes, model_type, expected):
    verdict = servability.check(saved(**changes), model_type)
    assert not verdict.servable and len(verdict.reasons) == 1 and verdict.reasons[0].startswith(expected)
    assert verdict.describe().startswith("vLLM cannot serve the adapter: " + expected)


def test_reasons_add_up():
    verdict = servability.check(saved(use_dora=True, bias="all", modules_to_save=["lm_head"]), "phi3")
    assert len(verdict.reasons) == 3


def test_a_rank_above_the_default_needs_max_lora_rank():
    verdict = servability.check(saved(r=48, target_modules=["layers.0.self_attn.q_proj", "v_proj"]), "llama")
    assert verdict.servable and verdict.notes == ["start vLLM with --max-lora-rank 64 (rank 48; the default is 16)"]
    assert servability.max_lora_rank_for(16) == 16 and servability.max_lora_rank_for(300) == 320
    assert servability.max_lora_rank_for(513) is None


def test_unchecked_targets_are_said_so():
    assert servability.check(saved(target_modules=".*proj"), "phi3").notes == [
        "target modules given as a pattern: not checked against vLLM"]
    verdict = servability.check(saved(target_modules=["c_attn"]), "gpt2")
    assert verdict.servable and verdict.notes == [
        "target modules not checked against vLLM's layers for model type gpt2"]


def test_how_to_load_a_hub_model_pins_the_revision_and_offers_auto_peft():
    text = how_to_load(config(revision="rev1"), ADAPTER)
    assert "AutoModelForCausalLM.from_pretrained('microsoft/Phi-3-mini-4k-instruct', revision='rev1')" in text
    assert 'PeftModel.from_pretrained(base, "./adapter")' in text
    assert 'AutoPeftModelForCausalLM.from_pretrained("./adapter")' in text
    assert text.startswith(f"# download {ADAPTER} to ./adapter\n")
    compile(text, "how_to_load", "exec")  # valid Python


def test_how_to_load_a_uri_base_downloads_it_first():
    text = how_to_load(config("s3://models/phi3"), ADAPTER)
    assert text.startswith(f"# download {ADAPTER} to ./adapter and s3://models/phi3 to ./base")
    assert 'AutoModelForCausalLM.from_pretrained("./base")' in text.replace("'", '"')
    assert "AutoPeftModelForCausalLM" not in text  # it cannot fetch s3://


def test_model_card_of_a_servable_hub_adapter():
    c = config(revision="rev1", r=64)
    card = model_card(c, saved(r=64), ME, servability.check(saved(r=64), "phi3"), ADAPTER)
    assert card.startswith("---\nlibrary_name: peft\n") and "base_model: microsoft/Phi-3-mini-4k-instruct" in card
    assert "- Base model: `microsoft/Phi-3-mini-4k-instruct`, revision `rev1`" in card
    assert "r=64, alpha=32" in card and "target modules down_proj, gate_up_proj, o_proj, qkv_proj" in card
    assert "LoRAFineTune team/ft-b (uid uid-b)" in card and ADAPTER in card
    assert ("vllm serve microsoft/Phi-3-mini-4k-instruct --revision rev1 --enable-lora "
            "--lora-modules ft-b=./adapter --max-lora-rank 64") in card
    assert "vLLM can serve the adapter: start vLLM with --max-lora-rank 64" in card


def test_model_card_of_a_uri_base_and_an_adapter_vllm_cannot_serve():
    c = config("s3://models/phi3", use_dora=True)
    verdict = servability.check(saved(use_dora=True), "phi3")
    card = model_card(c, saved(use_dora=True), ME, verdict, ADAPTER)
    assert "base_model:" not in card and "revision `as given (none pinned)`" in card
    assert "PEFT and vLLM cannot fetch the base model s3://models/phi3 themselves" in card
    assert "vLLM cannot serve the adapter: DoRA" in card and "vllm serve" not in card
    assert vllm_command(c, ME, saved()) == "vllm serve ./base --enable-lora --lora-modules ft-b=./adapter"


def test_finish_adapter_rewrites_the_config_and_replaces_peft_s_card(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps(saved()))
    (tmp_path / "README.md").write_text("PEFT's template")
    verdict, load = finish_adapter(tmp_path, config("s3://models/phi3", revision="v2"), ME, "phi3", ADAPTER)
    written = json.loads((tmp_path / "adapter_config.json").read_text())
    assert written["base_model_name_or_path"] == "s3://models/phi3" and written["revision"] == "v2"
    assert verdict.servable and verdict.notes == [
        "PEFT and vLLM cannot fetch the base model s3://models/phi3 themselves: download it to a directory "
        "and pass that directory as the base"]
    assert (tmp_path / "README.md").read_text().startswith("---\nlibrary_name: peft") and "./base" in load


def test_servability_travels_in_the_termination_message():
    verdict = Servability(servable=False, reasons=["DoRA (lora.useDora) is not supported by vLLM"])
    msg = TerminationMessage(outcome="succeeded", reason="Completed", message="x" * 5000, servability=verdict)
    back = TerminationMessage.decode(msg.encode())
    assert back is not None and back.servability == verdict and back.message.endswith("[truncated]")
