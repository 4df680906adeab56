"""lora.init pissa and olora: the published adapter is PEFT's rank-2r conversion, which applies to the unmodified
base model; the base outputs (samples) and a resume stay exact; a checkpoint of another init is refused."""

from __future__ import annotations

import json

import pytest

from lft_api.contract import RunIdentity
from lft_api.spec import TrainerConfig
from lft_trainer.adapter import adapter_card, servability
from lft_trainer.errors import InvalidInput
from lft_trainer.model import conversion
from lft_trainer.model import loading as model
from tests.unit.trainer.model.conftest import batch, train_steps


def cfg(tiny, **lora) -> TrainerConfig:
    return TrainerConfig(model={"name": str(tiny)}, dataset={"uri": "d"}, output={"uri": "/tmp/out"},
                         lora={"r": 4, "alpha": 8, "dropout": 0.0, **lora})


def load_base(tiny):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny)


def logits(m, ids):
    import torch

    with torch.no_grad():
        return m(input_ids=ids).logits


@pytest.mark.parametrize("init,rslora", [("pissa", False), ("olora", False), ("pissa", True)])
def test_the_published_adapter_applies_to_the_unmodified_base(tiny, tmp_path, init, rslora):
    from peft import PeftModel

    config, ids = cfg(tiny, init=init, rslora=rslora), batch()
    peft_model = model.with_lora(config, load_base(tiny))
    assert peft_model.peft_config["default"].init_lora_weights == init  # PEFT decomposed the base
    initial = conversion.save_initial(peft_model, tmp_path / "work")
    train_steps(peft_model, ids)
    trained = logits(peft_model, ids)

    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(str(adapter_dir))  # what trainer.save_model writes: fits the residual base only
    # A serving engine (vLLM) adds B A to the weights it has: it never decomposes them as PEFT's loader does.
    as_served = tmp_path / "as-served"
    peft_model.save_pretrained(str(as_served))
    served_config = json.loads((as_served / "adapter_config.json").read_text())
    (as_served / "adapter_config.json").write_text(json.dumps({**served_config, "init_lora_weights": True}))
    unconverted = logits(PeftModel.from_pretrained(load_base(tiny), str(as_served)), ids)
    assert (unconverted - trained).abs().max() > 1e-2  # the reason for the conversion

    conversion.save_converted(peft_model, adapter_dir, initial)
    saved = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert saved["r"] == 8 and saved["init_lora_weights"] is True
    assert saved["lora_alpha"] == pytest.approx(8 * 2 ** 0.5 if rslora else 16)  # the same scale at rank 2r
    fresh = PeftModel.from_pretrained(load_base(tiny), str(adapter_dir))
    assert (logits(fresh, ids) - trained).abs().max() < 1e-4
    assert (trained - logits(load_base(tiny), ids)).abs().max() > 1e-1  # it trained something

    # What is reported: the rank published, not lora.r.
    verdict, _ = adapter_card.finish_adapter(adapter_dir, config, RunIdentity(name="run", spec_hash="0123456789abcdef"), "phi3", "file:///out/adapter")
    published = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert servability.adapter_rank(published) == 8 and verdict.servable
    card = (adapter_dir / "README.md").read_text()
    assert "r=8, alpha=" in card and f"lora.init {init} at rank 4" in card


def test_the_servability_report_names_the_doubled_rank(tiny, tmp_path):
    config = cfg(tiny, init="pissa", r=16, alpha=32)
    peft_model = model.with_lora(config, load_base(tiny))
    initial = conversion.save_initial(peft_model, tmp_path / "work")
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(str(adapter_dir))
    conversion.save_converted(peft_model, adapter_dir, initial)
    verdict, _ = adapter_card.finish_adapter(adapter_dir, config, RunIdentity(name="run", spec_hash="0123456789abcdef"), "phi3", "file:///out/adapter")
    assert verdict.notes == ["start vLLM with --max-lora-rank 32 (rank 32; the default is 16)"]
    assert "--max-lora-rank 32" in (adapter_dir / "README.md").read_text()


def test_the_initial_adapter_gives_the_base_model_back(tiny, tmp_path):
    """samples' base outputs: the base weights are residual, the initial adapter restores them (never decomposed
    again: its config says init_lora_weights true)."""
    ids = batch()
    peft_model = model.with_lora(cfg(tiny, init="pissa"), load_base(tiny))
    initial = conversion.save_initial(peft_model, tmp_path / "work")
    assert json.loads((initial / "adapter_config.json").read_text())["init_lora_weights"] is True
    train_steps(peft_model, ids)
    trained, base = logits(peft_model, ids), logits(load_base(tiny), ids)
    with peft_model.disable_adapter():
        assert (logits(peft_model, ids) - base).abs().max() > 1e-2  # the residual model, not the base
    with conversion.as_base(peft_model, initial):
        assert (logits(peft_model, ids) - base).abs().max() < 1e-4
    assert (logits(peft_model, ids) - trained).abs().max() == 0  # the trained adapter active again
    assert list(peft_model.peft_config) == ["default"]


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_a_resume_decomposes_the_fresh_base_the_same_way(tiny, init):
    """The trainer loads the unmodified base from its files at every attempt: the same residual weights and initial
    adapter, so a checkpoint's adapter fits and the conversion subtracts the same B0 A0."""
    import torch

    a = model.with_lora(cfg(tiny, init=init), load_base(tiny)).state_dict()
    b = model.with_lora(cfg(tiny, init=init), load_base(tiny)).state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


def test_a_checkpoint_of_another_init_is_refused(tiny, tmp_path):
    def ckpt(init) -> object:
        d = tmp_path / str(init)
        d.mkdir(exist_ok=True)
        (d / "adapter_config.json").write_text(json.dumps({"init_lora_weights": init}))
        return d

    conversion.check_resume(cfg(tiny, init="pissa"), ckpt("pissa"), "s3://b/c")
    conversion.check_resume(cfg(tiny), ckpt(True), "s3://b/c")
    conversion.check_resume(cfg(tiny, init="gaussian"), ckpt(True), "s3://b/c")  # both fit the unmodified base
    conversion.check_resume(cfg(tiny, init="pissa"), tmp_path, "s3://b/c")  # no adapter config: nothing to compare
    for config, found in ((cfg(tiny), "pissa"), (cfg(tiny, init="pissa"), True), (cfg(tiny, init="olora"), "pissa")):
        with pytest.raises(InvalidInput) as refused:
            conversion.check_resume(config, ckpt(found), "s3://b/c")
        assert refused.value.reason == "InvalidResumeFrom" and refused.value.field == "lora.init"
        assert "resuming would change the model it continues" in refused.value.message


def test_samples_complete_the_base_outputs_with_the_unmodified_base(tiny, tmp_path):
    from transformers import AutoTokenizer

    from lft_trainer.adapter import samples

    tok = AutoTokenizer.from_pretrained(tiny)
    prompt = samples.Prompt("The quick brown fox", "jumps", add_special_tokens=True)
    base_says = samples.generate(load_base(tiny).eval(), tok, prompt, 8)
    peft_model = model.with_lora(cfg(tiny, init="pissa"), load_base(tiny))
    initial = conversion.save_initial(peft_model, tmp_path / "work")
    train_steps(peft_model, batch(), steps=5, lr=5e-2)
    (residual,), _ = samples.complete_all(peft_model, tok, [prompt], 8)  # the adapter disabled: W_res alone
    (row,), stopped = samples.complete_all(peft_model, tok, [prompt], 8,
                                           as_base=lambda: conversion.as_base(peft_model, initial))
    assert stopped is None and row["baseOutput"] == base_says != residual["baseOutput"]
    assert row["tunedOutput"] == residual["tunedOutput"]
