"""The fine-tuning knobs (issue #23): each reaches TRL's SFTConfig or PEFT's LoraConfig, and the summary's
`resolved` block records the values the run used. Unset knobs pass nothing: the libraries' defaults apply."""

from __future__ import annotations

import pytest

from lft_api.spec import BNB_OPTIMIZERS, TORCH_OPTIMIZERS, TrainerConfig, TrainingSpec
from lft_trainer.errors import InvalidInput
from lft_trainer.model import loading as model
from lft_trainer.reporting.summary import resolved_config
from lft_trainer.run import preflight, sft_args

KNOB_KEYS = {"optim", "max_grad_norm", "lr_scheduler_kwargs", "neftune_noise_alpha", "use_rslora", "init_lora_weights"}


def cfg(training: dict | None = None, lora: dict | None = None) -> TrainerConfig:
    return TrainerConfig(model={"name": "m"}, dataset={"uri": "d"}, output={"uri": "s3://b/r"},
                         training=training or {}, lora=lora or {})


def kwargs(c: TrainerConfig) -> dict:
    return sft_args.sft_kwargs(c, "/tmp/o", cuda=False, dtype_name="float32", has_eval=True)


def resolved(c: TrainerConfig) -> dict:
    """What the summary would record: the real SFTConfig and LoraConfig built from the kwargs."""
    pytest.importorskip("trl")
    from peft import LoraConfig
    from trl import SFTConfig

    return resolved_config(SFTConfig(**kwargs(c)), LoraConfig(**model.lora_kwargs(c)))


def test_unset_knobs_pass_nothing_and_resolve_to_the_former_defaults():
    c = cfg()
    assert not KNOB_KEYS & set(kwargs(c)) and not KNOB_KEYS & set(model.lora_kwargs(c))
    assert kwargs(c)["warmup_steps"] == 0.03 and kwargs(c)["lr_scheduler_type"] == "cosine"
    r = resolved(c)
    assert r["sftConfig"]["optim"] == "adamw_torch_fused" and r["sftConfig"]["max_grad_norm"] == 1.0
    assert r["sftConfig"]["warmup_steps"] == 0.03 and r["sftConfig"]["neftune_noise_alpha"] is None
    assert r["loraConfig"]["use_rslora"] is False and r["loraConfig"]["init_lora_weights"] is True
    assert r["loraConfig"]["r"] == 16 and r["loraConfig"]["target_modules"] == "all-linear"


def test_optimizer_max_grad_norm_and_neftune_reach_the_sft_config():
    c = cfg({"optimizer": "adafactor", "maxGradNorm": 0.3, "neftuneNoiseAlpha": 5})
    kw = kwargs(c)
    assert kw["optim"] == "adafactor" and kw["max_grad_norm"] == 0.3 and kw["neftune_noise_alpha"] == 5
    r = resolved(c)["sftConfig"]
    assert r["optim"] == "adafactor" and r["max_grad_norm"] == 0.3 and r["neftune_noise_alpha"] == 5


def test_warmup_steps_replace_the_ratio():
    c = cfg({"warmupSteps": 7})
    assert kwargs(c)["warmup_steps"] == 7
    assert resolved(c)["sftConfig"]["warmup_steps"] == 7
    assert kwargs(cfg({"warmupRatio": 0.1}))["warmup_steps"] == 0.1


def test_min_learning_rate_is_cosine_with_a_floor():
    c = cfg({"learningRate": 1e-3, "minLearningRate": 1e-5})
    kw = kwargs(c)
    assert kw["lr_scheduler_type"] == "cosine_with_min_lr" and kw["lr_scheduler_kwargs"] == {"min_lr": 1e-5}
    r = resolved(c)["sftConfig"]
    assert r["lr_scheduler_type"] == "cosine_with_min_lr" and r["lr_scheduler_kwargs"] == {"min_lr": 1e-5}


def test_min_learning_rate_floors_the_real_schedule():
    pytest.importorskip("torch")
    import torch
    from transformers import get_scheduler

    kw = kwargs(cfg({"learningRate": 1e-3, "minLearningRate": 1e-4}))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = get_scheduler(kw["lr_scheduler_type"], opt, num_warmup_steps=0, num_training_steps=10,
                          scheduler_specific_kwargs=kw["lr_scheduler_kwargs"])
    for _ in range(10):
        opt.step()
        sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(1e-4)


def test_rslora_and_init_reach_the_lora_config():
    c = cfg(lora={"rslora": True, "init": "gaussian"})
    lk = model.lora_kwargs(c)
    assert lk["use_rslora"] is True and lk["init_lora_weights"] == "gaussian"
    r = resolved(c)["loraConfig"]
    assert r["use_rslora"] is True and r["init_lora_weights"] == "gaussian"


def test_offered_optimizers_are_the_installed_transformers_names():
    pytest.importorskip("transformers")
    from transformers.trainer_optimizer import _BITSANDBYTES_OPTIMIZERS
    from transformers.training_args import OptimizerNames

    names = {o.value for o in OptimizerNames}
    assert set(TORCH_OPTIMIZERS) | set(BNB_OPTIMIZERS) <= names
    assert set(BNB_OPTIMIZERS) == {o.value for o in _BITSANDBYTES_OPTIMIZERS}  # every bitsandbytes one is marked
    assert not set(TORCH_OPTIMIZERS) & {o.value for o in _BITSANDBYTES_OPTIMIZERS}


@pytest.mark.parametrize("name", BNB_OPTIMIZERS)
def test_bitsandbytes_optimizers_need_a_gpu(name):
    with pytest.raises(InvalidInput) as ei:
        preflight.check_optimizer(TrainingSpec(optimizer=name), cuda_available=False)
    assert ei.value.reason == "UnsupportedHardware" and ei.value.field == "training.optimizer"
    assert ei.value.message.startswith(f"training.optimizer '{name}' (bitsandbytes) needs a CUDA GPU")


def test_torch_optimizers_run_on_cpu():
    for name in (None, *TORCH_OPTIMIZERS):
        preflight.check_optimizer(TrainingSpec(optimizer=name), cuda_available=False)

