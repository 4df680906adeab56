"""training.extra (issue #23): each key reaches TRL's SFTConfig or PEFT's LoraConfig, typed from the field it names,
and the summary's resolved block shows it; unknown keys, owned keys and values of the wrong type are refused with
the key's name. API side (pydantic, CEL): tests/unit/test_spec_knobs.py."""

from __future__ import annotations

import pytest

from lft_api.conditions import Reason
from lft_api.spec import TrainerConfig
from lft_api.training_knobs import OPERATOR_EXTRA_KEYS, TYPED_EXTRA_KEYS
from lft_trainer.errors import InvalidInput
from lft_trainer.model import extra_settings
from lft_trainer.model import loading as model
from lft_trainer.reporting.summary import resolved_config
from lft_trainer.run import preflight, sft_args
from lft_trainer.run.train import resolved_extra

pytest.importorskip("trl")


def cfg(extra: dict[str, str], lora: dict | None = None) -> TrainerConfig:
    return TrainerConfig(model={"name": "m"}, dataset={"uri": "d"}, output={"uri": "s3://b/r"},
                         training={"extra": extra}, lora=lora or {})


def sft(c: TrainerConfig):
    from trl import SFTConfig

    kwargs = sft_args.sft_kwargs(c, "/tmp/o", cuda=False, dtype_name="float32", has_eval=True)
    return extra_settings.build(SFTConfig, kwargs, extra_settings.route(c.training.extra).sft)


def lora(c: TrainerConfig):
    from peft import LoraConfig

    return extra_settings.build(LoraConfig, model.lora_kwargs(c), extra_settings.route(c.training.extra).lora)


def test_an_extra_key_reaches_the_sft_config_and_another_the_lora_config_and_the_summary():
    c = cfg({"adam_beta2": "0.95", "torch_compile_mode": "max-autotune", "layers_to_transform": "[0, 1]",
             "lora_bias": "true"}, lora={"targetModules": ["qkv_proj"]})
    kw = sft_args.sft_kwargs(c, "/tmp/o", cuda=False, dtype_name="float32", has_eval=True)
    assert kw["adam_beta2"] == 0.95 and kw["torch_compile_mode"] == "max-autotune" and "layers_to_transform" not in kw
    lk = model.lora_kwargs(c)
    assert lk["layers_to_transform"] == [0, 1] and lk["lora_bias"] is True and "adam_beta2" not in lk
    s, lc = sft(c), lora(c)
    assert s.adam_beta2 == 0.95 and lc.layers_to_transform == [0, 1]
    r = resolved_config(s, lc, resolved_extra(c))
    assert r["sftConfig"]["adam_beta2"] == 0.95 and r["sftConfig"]["torch_compile_mode"] == "max-autotune"
    assert r["loraConfig"]["layers_to_transform"] == [0, 1] and r["loraConfig"]["lora_bias"] is True
    assert "layers_to_transform" not in r["sftConfig"] and "adam_beta2" not in r["loraConfig"]
    assert "adam_beta2" not in resolved_config(sft(cfg({})), lora(cfg({})), resolved_extra(cfg({})))["sftConfig"]


@pytest.mark.parametrize("text,declared,want", [
    ("1", int, 1), ("1", float, 1.0), ("1", str, "1"), ("1", str | None, "1"), ("true", bool, True),
    ("null", int | None, None), ("[1, 2]", list[int] | int | None, [1, 2]), ("3", list[int] | int | None, 3),
    ('{"a": true}', dict[str, bool] | None, {"a": True}), ("plain text", str | None, "plain text"),
    ("[[0, 2]]", list[tuple[int, int]] | None, [(0, 2)]),
])
def test_values_are_read_as_json_when_that_gives_the_field_s_type_else_as_text(text, declared, want):
    got = extra_settings.typed_value("k", text, declared, "SFTConfig")
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize("key,text,says", [
    ("adam_beta2", "high", "'high' is not a value of SFTConfig.adam_beta2, which takes float"),
    ("eval_accumulation_steps", "1.5", "SFTConfig.eval_accumulation_steps, which takes int | None"),
    ("layers_to_transform", '["a"]', "LoraConfig.layers_to_transform"),
    ("fan_in_fan_out", "1", "which takes bool"),
])
def test_a_value_of_the_wrong_type_is_refused_naming_the_key(key, text, says):
    with pytest.raises(InvalidInput) as ei:
        extra_settings.route({key: text})
    assert ei.value.reason == Reason.INVALID_EXTRA_SETTING == "InvalidExtraSetting"
    assert ei.value.field == f"training.extra.{key}" and ei.value.message.startswith(f"training.extra.{key}: ")
    assert says in ei.value.message


def test_an_unknown_key_is_refused_with_a_close_match():
    with pytest.raises(InvalidInput) as ei:
        preflight.check_extra(cfg({"adam_epsilonn": "1e-6"}))
    assert ei.value.reason == Reason.UNKNOWN_EXTRA_SETTING == "UnknownExtraSetting"
    assert ei.value.field == "training.extra.adam_epsilonn"
    assert ei.value.message.startswith("training.extra.adam_epsilonn: neither TRL's SFTConfig nor PEFT's LoraConfig "
                                       "has a setting of that name (did you mean adam_epsilon?)")
    with pytest.raises(InvalidInput, match=r"did you mean learning_rate\? That one is not settable here: use "
                                           r"training.learningRate instead"):
        extra_settings.route({"learning_rat": "0.1"})
    with pytest.raises(InvalidInput) as ei:
        extra_settings.route({"zzz": "1"})
    assert "did you mean" not in ei.value.message


@pytest.mark.parametrize("key", ["output_dir", "learning_rate", "hub_model_id", "save_steps", "fsdp_config"])
def test_owned_keys_are_refused_by_the_trainer_too(key):
    """For a resource stored before the CEL rule (the config's own validation refuses them first: route's check is
    the last line)."""
    with pytest.raises(InvalidInput) as ei:
        extra_settings.route({key: "1"})
    assert ei.value.reason == Reason.INVALID_CONFIG and ei.value.field == f"training.extra.{key}"


def test_a_value_the_config_refuses_names_its_key():
    with pytest.raises(InvalidInput) as ei:
        preflight.check_extra(cfg({"layers_pattern": "layers", "adam_beta2": "0.9"}, lora={"targetModules": ["q"]}))
    assert ei.value.reason == Reason.INVALID_EXTRA_SETTING and ei.value.field == "training.extra.layers_pattern"
    assert ei.value.message.startswith("training.extra.layers_pattern: LoraConfig refused it: When `layers_pattern`")
    with pytest.raises(InvalidInput) as ei:
        sft(cfg({"torch_empty_cache_steps": "0", "adam_beta2": "0.9"}))
    assert ei.value.field == "training.extra.torch_empty_cache_steps"
    assert "SFTConfig refused it: `torch_empty_cache_steps` must be an integer bigger than 0" in ei.value.message


def test_pre_flight_passes_good_extras_and_nothing_without_them():
    preflight.check_extra(cfg({"adam_beta2": "0.95", "layers_to_transform": "[0]"}, lora={"targetModules": ["q"]}))
    preflight.check_extra(cfg({}))
    assert extra_settings.route(None) == extra_settings.RoutedExtra({}, {})


def test_every_owned_key_is_a_field_of_the_installed_configs():
    """The owned lists name real fields (a typo would leave the real one open); warmup_ratio is transformers 4's."""
    known = set().union(*extra_settings.config_fields().values())
    assert set(TYPED_EXTRA_KEYS) - known == {"warmup_ratio"}
    assert set(OPERATOR_EXTRA_KEYS) - known == {"overwrite_output_dir"}
    for key, field in TYPED_EXTRA_KEYS.items():
        assert field.split(".")[0] in ("training", "lora", "model", "resources", "checkpointing"), key


def test_a_lora_key_with_model_adapter_is_refused_the_adapter_keeps_its_own_config():
    # model.adapter loads the adapter's own LoraConfig: a LoraConfig key in training.extra would be ignored.
    c = TrainerConfig(model={"name": "m", "adapter": "s3://b/a/adapter"}, dataset={"uri": "d"},
                      output={"uri": "s3://b/r"}, training={"extra": {"layers_to_transform": "[0]", "adam_beta2": "0.9"}})
    with pytest.raises(InvalidInput) as ei:
        preflight.check_extra(c)
    assert ei.value.reason == Reason.INVALID_EXTRA_SETTING and ei.value.field == "training.extra.layers_to_transform"
    assert "model.adapter continues an adapter with its own LoraConfig" in ei.value.message
    # An SFTConfig key is fine with it.
    preflight.check_extra(c.model_copy(update={"training": c.training.model_copy(update={"extra": {"adam_beta2": "0.9"}})}))
