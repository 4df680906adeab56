"""Config -> library arguments (pure), and the tiny model builder."""

from __future__ import annotations

import json

import pytest

from lft_api.spec import TrainerConfig
from lft_trainer.model import loading as model
from lft_trainer.run import sft_args, train


def cfg(**training) -> TrainerConfig:
    return TrainerConfig(model={"name": "m"}, dataset={"uri": "d"}, output={"uri": "s3://b/r"}, training=training)


def test_defaults_are_the_phi3_lora_recipe_with_a_lora_learning_rate():
    c = cfg()
    lk = model.lora_kwargs(c)
    assert lk == dict(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", bias="none",
                      use_dora=False, task_type="CAUSAL_LM")
    kw = sft_args.sft_kwargs(c, "/tmp/o", cuda=True, dtype_name="bfloat16", has_eval=True)
    assert kw["learning_rate"] == 2e-4 and kw["lr_scheduler_type"] == "cosine"
    assert kw["gradient_checkpointing"] is True and kw["gradient_checkpointing_kwargs"] == {"use_reentrant": False}
    assert kw["bf16"] is True and kw["fp16"] is False and kw["use_cpu"] is False
    assert kw["num_train_epochs"] == 1.0 and "max_steps" not in kw
    assert kw["eval_strategy"] == "epoch" and kw["save_steps"] == 100
    assert kw["include_num_input_tokens_seen"] == "non_padding"  # tokens/s counts real tokens only


def test_cpu_turns_off_gradient_checkpointing_and_mixed_precision():
    kw = sft_args.sft_kwargs(cfg(maxSteps=7, evalSteps=3), "/tmp/o", cuda=False, dtype_name="float32", has_eval=True)
    assert kw["gradient_checkpointing"] is False and kw["use_cpu"] is True
    assert kw["bf16"] is False and kw["fp16"] is False
    assert kw["max_steps"] == 7 and kw["eval_strategy"] == "steps" and kw["eval_steps"] == 3
    assert sft_args.sft_kwargs(cfg(), "/o", cuda=False, dtype_name="float32", has_eval=False)["eval_strategy"] == "no"


def test_explicit_target_modules_pass_through():
    c = TrainerConfig(model={"name": "m"}, dataset={"uri": "d"}, output={"uri": "o"},
                      lora={"targetModules": ["qkv_proj", "o_proj"], "useDora": True})
    assert model.lora_kwargs(c)["target_modules"] == ["qkv_proj", "o_proj"]
    assert model.lora_kwargs(c)["use_dora"] is True


@pytest.mark.parametrize("req,cuda,bf16,want", [
    ("auto", False, False, "float32"), ("auto", True, True, "bfloat16"), ("auto", True, False, "float16"),
    ("float16", False, False, "float32"), ("bfloat16", False, False, "bfloat16"), ("float32", True, True, "float32"),
])
def test_dtype_resolution(req, cuda, bf16, want):
    assert model.resolve_dtype_name(req, cuda, bf16) == want


def test_eval_before_is_read_back_from_a_checkpoint(tmp_path):
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": [
        {"eval_loss": 7.5, "step": 0}, {"loss": 6.0, "step": 10}, {"eval_loss": 5.0, "step": 10}]}))
    assert train.eval_before_from_checkpoint(tmp_path) == 7.5
    assert train.eval_before_from_checkpoint(tmp_path / "missing") is None


def test_tiny_model_is_seeded_and_has_phi3_tokens(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    from lft_trainer.model import tiny_model

    a = tiny_model.build(tmp_path / "a")
    b = tiny_model.build(tmp_path / "b")
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    conf = AutoConfig.from_pretrained(a)
    assert (conf.model_type, conf.hidden_size, conf.num_hidden_layers) == ("phi3", 64, 2)
    assert (conf.num_attention_heads, conf.num_key_value_heads) == (4, 2)
    tok = AutoTokenizer.from_pretrained(a)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
                                   tokenize=False)
    assert text == "<|user|>\nhi<|end|>\n<|assistant|>\nyo<|end|>\n<|endoftext|>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    for special in ("<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>", "<|system|>"):
        assert tok.convert_tokens_to_ids(special) in ids or special == "<|system|>"
    assert tok.decode(ids) == text  # byte-level: lossless
