"""training.performance, pure parts: the memory estimate against the H200 measurements, model FLOPs per
token, the GPU peak table, the plan (micro-batch, checkpointing, kernels, batching) and its out-of-memory
back-off, the out-of-memory message, the throughput meter, the SFTConfig arguments from a plan, the spec
hash of legacy specs, and the Reporter's plan and throughput events. No GPU, no cluster.

The plans chosen for Phi-3-mini (bf16 weights or QLoRA 4bit; LoRA r16 on all linear layers, dropout
0.05), maxLength 2048, the default effective batch (batchSize unset x gradientAccumulationSteps 4 = 16
sequences), performance auto, Liger kernels installed (the GPU image); asserted in
test_auto_plan_per_card (CARD_PLANS):

    card      bf16: micro x accum  ckpt  est. GiB    QLoRA 4bit: micro x accum  ckpt  est. GiB
    16 GiB          4 x 4           on    12.75                  4 x 4           on    10.75
    24 GiB          1 x 16          off   16.93                  1 x 16          off   16.46
    40 GiB          2 x 8           off   25.11                  2 x 8           off   28.67
    80 GiB          4 x 4           off   41.48                  4 x 4           off   53.11
    141 GiB         8 x 2           off   74.22                  8 x 2           off  101.97

Without Liger kernels (fusedKernels false, or liger-kernel missing):

    16 GiB          4 x 4           on    13.56                  4 x 4           on    11.97
    24 GiB          1 x 16          off   20.18                  1 x 16          off   21.33
    40 GiB          2 x 8           off   31.61                  1 x 16          off   21.33
    80 GiB          4 x 4           off   54.48                  2 x 8           off   38.42
    141 GiB         8 x 2           off  100.22                  4 x 4           off   72.61

(The card is the memory the plan sees: torch's total, or LFT_GPU_MEMORY_GIB.)
"""

from __future__ import annotations

import dataclasses
import io
import json

import pytest
import torch

from lft_api.contract import Performance
from lft_api.spec import LoraSpec, TrainerConfig, TrainingSpec
from lft_trainer.performance import plan as performance
from lft_trainer.performance import probes, throughput
from lft_trainer.performance.plan import GIB, Hardware, decoder_shape, estimate_memory, make_plan
from lft_trainer.reporting import progress
from lft_trainer.run import sft_args
from tests.support.clock import Clock

PHI3_MINI_CONFIG = dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=32,
                        num_key_value_heads=32, vocab_size=32064, model_type="phi3")
PHI3 = decoder_shape(PHI3_MINI_CONFIG)
PHI3_LORA = PHI3.lora_params(["all-linear"], 16)

# ---------------------------------------------------------------------------------------------
# 1. the memory estimate against measured peaks
# ---------------------------------------------------------------------------------------------
MEMORY_TOLERANCE = 0.10
# nvidia-smi peak of the training process on one H200, Phi-3-mini shape, LoRA r16 all-linear dropout 0.05.
# "readme": bench/gpu_phi3.py as of commit 7127cc0 (the README's GPU figures; packing, maxLength 512,
#           batchSize 8, gradient checkpointing on, no Liger kernels);
# "run1"/"run2": bench/results/gpu_phi3-h200-run{1,2}.json (maxLength 2048, micro-batch 4; both runs
#           measured the same peaks), cases recipe, qlora-recipe, auto, auto-nofused, qlora-auto.
MEASURED = [
    # source,             quantization, micro, tokens, checkpointing, fused kernels, GiB
    ("readme bf16-lora", "none", 8, 512, True, False, 11.9),
    ("readme qlora-4bit", "4bit", 8, 512, True, False, 7.6),
    ("run1+2 recipe", "none", 4, 2048, True, False, 13.56),
    ("run1+2 auto", "none", 4, 2048, False, True, 42.22),
    ("run1+2 auto-nofused", "none", 4, 2048, False, False, 56.25),
    ("run1+2 qlora-recipe", "4bit", 4, 2048, True, False, 12.17),
    ("run2 qlora-auto", "4bit", 4, 2048, False, True, 50.83),
]


@pytest.mark.parametrize("source,quantization,micro,tokens,ckpt,fused,measured", MEASURED, ids=[m[0] for m in MEASURED])
def test_memory_estimate_within_ten_percent_of_the_measured_peak(source, quantization, micro, tokens, ckpt, fused,
                                                                 measured):
    est = estimate_memory(PHI3, quantization=quantization, lora_params=PHI3_LORA, micro_batch=micro, seq_len=tokens,
                          checkpointing=ckpt, lora_dropout=True, fused_kernels=fused)
    assert est.total / GIB == pytest.approx(measured, rel=MEMORY_TOLERANCE), (source, est.parts_gib())
    assert sum(est.parts_gib().values()) == pytest.approx(est.gib(), abs=0.05)


# ---------------------------------------------------------------------------------------------
# 2. model FLOPs per token, LoRA parameters
# ---------------------------------------------------------------------------------------------
def test_phi3_mini_shape_counted_by_hand():
    h, f, layers, vocab = 3072, 8192, 32, 32064
    per_layer = h * 3 * h + h * h + h * 2 * f + f * h  # qkv, o, gate_up, down
    assert PHI3.linear_params == layers * per_layer + h * vocab == 3_722_379_264
    assert PHI3.total_params == PHI3.linear_params + vocab * h + (2 * layers + 1) * h  # embedding, norms
    lora_per_layer = 16 * ((h + 3 * h) + (h + h) + (h + 2 * f) + (f + h))  # r x (in + out)
    assert PHI3_LORA == layers * lora_per_layer == 25_165_824  # lm_head not adapted


@pytest.mark.parametrize("span", [2048, 1000])
def test_flops_per_token_of_phi3_mini(span):
    want = 4 * 3_722_379_264 + 6 * 25_165_824 + 6 * 32 * 3072 * span  # frozen, LoRA, causal attention
    assert performance.flops_per_token(PHI3, PHI3_LORA, span) == want
    assert want == pytest.approx(4 * 3.72e9 + 6 * 25.17e6 + 6 * 32 * 3072 * span, rel=1e-3)


def test_lora_targets_all_linear_leave_out_the_head_and_names_match_by_suffix():
    all_linear = {n.rsplit(".", 1)[-1] for n, _, _ in PHI3.lora_targets(["all-linear"])}
    assert all_linear == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
    assert len(PHI3.lora_targets(["o_proj"])) == 32
    assert PHI3.lora_params(["o_proj"], 8) == 32 * 8 * (3072 + 3072)
    assert PHI3.lora_params(["self_attn.qkv_proj", "down_proj"], 4) == 32 * 4 * ((3072 + 9216) + (8192 + 3072))
    assert PHI3.lora_targets(["proj"]) == []  # a suffix is a whole name, not part of one
    assert PHI3.lora_targets(["lm_head"]) == [("lm_head", 3072, 32064)]  # named, the head is adapted


@pytest.mark.parametrize("targets", [["all-linear"], ["qkv_proj", "down_proj"], ["o_proj"]])
def test_lora_params_match_peft_on_the_meta_device(targets):
    """What PEFT itself creates on a small Phi-3 (meta device: no memory, no weights)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Phi3Config

    small = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=32064)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(Phi3Config(**small))
    shape = performance.shape_from_model(model)
    assert sorted(shape.linears) == sorted(decoder_shape(small).linears)
    peft = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear" if targets == ["all-linear"] else targets,
                                            task_type="CAUSAL_LM"))
    trainable = sum(p.numel() for p in peft.parameters() if p.requires_grad)
    assert shape.lora_params(targets, 8) == trainable > 0


# ---------------------------------------------------------------------------------------------
# 3. GPU peaks
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,tflops", [
    ("NVIDIA H200", 989.4), ("NVIDIA GH200 480GB", 989.4), ("NVIDIA H100 80GB HBM3", 989.4),
    ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0), ("NVIDIA A100-SXM4-80GB", 312.0),
    ("NVIDIA A100 80GB PCIe", 312.0), ("NVIDIA L4", 121.0), ("NVIDIA L40S", 362.1), ("NVIDIA L40", 181.0),
    ("NVIDIA A10G", 70.0), ("NVIDIA A10", 125.0), ("Tesla T4", None), ("", None), (None, None),
])
def test_peak_bf16_tflops_more_specific_names_first(name, tflops):
    assert performance.peak_bf16_tflops(name) == tflops


# ---------------------------------------------------------------------------------------------
# 4. the plan
# ---------------------------------------------------------------------------------------------
def hw(gib: float | None = 141, fused: bool = True, varlen: str | None = "varlen") -> Hardware:
    return Hardware(True, "NVIDIA H200", int(gib * GIB) if gib else None, fused, varlen)


def plan(hardware: Hardware, quantization: str = "none", attn: str = "auto", shape=PHI3, **training):
    spec = TrainingSpec.model_validate({"maxLength": 2048, **training})
    return make_plan(spec, LoraSpec(quantization=quantization), attn, hardware, shape)


def test_cpu_plan_changes_nothing():
    p = plan(Hardware(cuda=False), gradientCheckpointing=True, fusedKernels=True, compile=True)
    assert (p.micro_batch, p.grad_accum, p.checkpointing, p.fused_kernels, p.compile) == (4, 4, False, False, False)
    assert not p.auto and p.estimate is None and p.batching == "padded" and p.attention is None
    assert p.halved() is None
    assert plan(Hardware(cuda=False), batchSize=2).micro_batch == 2


def test_performance_off_takes_the_spec_as_given():
    p = plan(hw(), performance="off")
    assert (p.micro_batch, p.grad_accum, p.checkpointing, p.fused_kernels) == (4, 4, True, False)  # defaults
    assert not p.auto and p.batching == "padded" and p.choices[-1] == "performance off: the spec's settings"
    assert p.estimate.gib() == pytest.approx(13.56, abs=0.01)  # estimated for the spec's settings
    p = plan(hw(), performance="off", batchSize=8, gradientAccumulationSteps=1, gradientCheckpointing=False,
             fusedKernels=True, compile=True)
    assert (p.micro_batch, p.grad_accum, p.checkpointing, p.fused_kernels, p.compile) == (8, 1, False, True, True)


def test_performance_off_says_when_the_estimate_does_not_fit():
    p = plan(hw(24), performance="off", batchSize=16, gradientCheckpointing=False)
    assert p.micro_batch == 16 and "likely to run out of memory" in p.choices[-1] and "24.0 GiB" in p.choices[-1]
    assert not any("likely" in c for c in plan(hw(141), performance="off").choices)


def test_fused_kernels_asked_for_but_not_installed_is_refused_before_loading(monkeypatch):
    from lft_trainer.errors import InvalidInput
    from lft_trainer.performance import sizing

    monkeypatch.setattr(probes, "probe_shape", lambda *a: PHI3)
    monkeypatch.setattr(probes, "probe_hardware", lambda model_type, gpu_memory_gib=None: hw(80, fused=False))
    cfg = config(fusedKernels=True)
    with pytest.raises(InvalidInput) as err:
        sizing.plan_performance(cfg, "unused", None, progress.Reporter([]))
    assert err.value.field == "training.fusedKernels" and "liger-kernel is not installed" in err.value.message


CARD_PLANS = [
    # quantization, fused kernels available, GiB, micro, accum, checkpointing, estimated GiB (module docstring)
    ("none", True, 16, 4, 4, True, 12.75), ("none", True, 24, 1, 16, False, 16.93),
    ("none", True, 40, 2, 8, False, 25.11), ("none", True, 80, 4, 4, False, 41.48),
    ("none", True, 141, 8, 2, False, 74.22),
    ("4bit", True, 16, 4, 4, True, 10.75), ("4bit", True, 24, 1, 16, False, 16.46),
    ("4bit", True, 40, 2, 8, False, 28.67), ("4bit", True, 80, 4, 4, False, 53.11),
    ("4bit", True, 141, 8, 2, False, 101.97),
    ("none", False, 16, 4, 4, True, 13.56), ("none", False, 24, 1, 16, False, 20.18),
    ("none", False, 40, 2, 8, False, 31.61), ("none", False, 80, 4, 4, False, 54.48),
    ("none", False, 141, 8, 2, False, 100.22),
    ("4bit", False, 16, 4, 4, True, 11.97), ("4bit", False, 24, 1, 16, False, 21.33),
    ("4bit", False, 40, 1, 16, False, 21.33), ("4bit", False, 80, 2, 8, False, 38.42),
    ("4bit", False, 141, 4, 4, False, 72.61),
]


@pytest.mark.parametrize("quantization,fused,gib,micro,accum,ckpt,est_gib", CARD_PLANS)
def test_auto_plan_per_card(quantization, fused, gib, micro, accum, ckpt, est_gib):
    p = plan(hw(gib, fused), quantization)
    assert (p.micro_batch, p.grad_accum, p.checkpointing, p.fused_kernels) == (micro, accum, ckpt, fused)
    assert p.effective_batch == 16 and p.auto and not p.micro_batch_explicit
    assert p.estimate.gib() == pytest.approx(est_gib, abs=0.01)
    assert p.estimate.total <= performance.MEMORY_BUDGET * gib * GIB
    assert f"micro-batch {micro} x {accum} accumulation steps" in p.choices[-1]

    def fits(m: int, c: bool) -> bool:
        return estimate_memory(PHI3, quantization=quantization, lora_params=PHI3_LORA, micro_batch=m, seq_len=2048,
                               checkpointing=c, fused_kernels=fused).total <= performance.MEMORY_BUDGET * gib * GIB

    # the largest split that fits; checkpointing only when no split fits without it
    assert not any(fits(m, ckpt) for m in (1, 2, 4, 8, 16) if m > micro)
    assert not ckpt or not any(fits(m, False) for m in (1, 2, 4, 8, 16))


def test_nothing_fits_takes_the_smallest_split_with_checkpointing_and_says_so():
    p = plan(hw(8))
    assert (p.micro_batch, p.grad_accum, p.checkpointing) == (1, 16, True)
    assert p.estimate.total > performance.MEMORY_BUDGET * 8 * GIB
    assert "even at micro-batch 1" in p.choices[-1] and "over 90% of 8.0 GiB" in p.choices[-1]


def test_explicit_batch_size_and_checkpointing_win():
    p = plan(hw(141), batchSize=2)  # the estimate would allow 8
    assert (p.micro_batch, p.grad_accum, p.micro_batch_explicit) == (2, 4, True)
    p = plan(hw(141), gradientCheckpointing=True)
    assert p.checkpointing and p.effective_batch == 16 and p.micro_batch == 16  # checkpointing lets it all fit
    p = plan(hw(16), gradientCheckpointing=False)
    assert not p.checkpointing and p.micro_batch == 1  # over budget, as asked: said in the choices
    assert "over 90%" in p.choices[-1]
    p = plan(hw(24), batchSize=4, gradientCheckpointing=False)
    assert (p.micro_batch, p.grad_accum, p.checkpointing) == (4, 4, False)


def test_unknown_shape_or_memory_keeps_the_spec_settings():
    for p in (plan(hw(141), shape=None), plan(hw(None))):
        assert (p.micro_batch, p.grad_accum, p.checkpointing, p.estimate) == (4, 4, True, None)
        assert p.auto and "no memory estimate" in p.choices[-1]


@pytest.mark.parametrize("attn,varlen,want", [
    ("auto", "varlen", "lft_varlen"), ("auto", None, "lft_varlen"), ("auto", "flash_attention_2", "flash_attention_2"),
    ("flash_attention_2", "varlen", "flash_attention_2"), ("sdpa", "varlen", "sdpa"),
])
def test_packing_is_padding_free_with_a_varlen_kernel(attn, varlen, want):
    p = plan(hw(141, varlen=varlen), attn=attn, packing=True)
    assert (p.attention, p.batching) == (want, "padding-free")


def test_unpacked_rows_are_grouped_by_length_under_auto_only():
    assert (plan(hw()).attention, plan(hw()).batching) == (None, "length-grouped")
    assert plan(hw(), attn="eager").attention == "eager"
    assert plan(hw(), performance="off").batching == "padded"


@pytest.mark.parametrize("available,field,want", [
    (True, None, True), (False, None, False), (True, False, False), (False, True, True),
])
def test_fused_kernels_when_available_unless_set(available, field, want):
    training = {} if field is None else {"fusedKernels": field}
    assert plan(hw(141, fused=available), **training).fused_kernels is want


# ---------------------------------------------------------------------------------------------
# 5. out-of-memory back-off
# ---------------------------------------------------------------------------------------------
def test_halved_keeps_the_effective_batch_and_records_each_back_off():
    p = plan(hw(141))
    steps = []
    while (p := p.halved()) is not None:
        steps.append((p.micro_batch, p.grad_accum, p.oom_backoffs))
        assert p.effective_batch == 16 and "(effective batch 16 kept)" in p.choices[-1]
    assert steps == [(4, 4, 1), (2, 8, 2), (1, 16, 3)]


def test_halved_takes_the_next_divisor_and_stops_after_max_backoffs():
    p = dataclasses.replace(plan(hw(141)), micro_batch=24, grad_accum=1)
    sizes = []
    while (p := p.halved()) is not None:
        sizes.append(p.micro_batch)
    assert sizes == [12, 6, 3] and performance.MAX_OOM_BACKOFFS == 3  # stopped by the count, not micro 1
    odd = dataclasses.replace(plan(hw(141)), micro_batch=9, grad_accum=2).halved()
    assert (odd.micro_batch, odd.grad_accum) == (3, 6)  # 18's largest divisor up to 4
    assert "out of memory at micro-batch 9: micro-batch 3 x 6 accumulation steps" in odd.choices[-1]


def test_halved_is_none_when_given_off_or_one():
    assert plan(hw(141), batchSize=8).halved() is None
    assert plan(hw(141), performance="off").halved() is None
    assert dataclasses.replace(plan(hw(141)), micro_batch=1, grad_accum=16).halved() is None


# ---------------------------------------------------------------------------------------------
# 6. the out-of-memory message
# ---------------------------------------------------------------------------------------------
BASE = plan(hw(80))  # micro-batch 4 x 4, estimated 41.48 GiB


@pytest.mark.parametrize("p,steps,why", [
    (plan(hw(80), batchSize=4), 0, "the micro-batch was given (training.batchSize)"),
    (plan(hw(80), performance="off"), 0, "training.performance is off"),
    (BASE, 11, "past the first 10 steps the memory need is not a start-up peak"),
    (dataclasses.replace(BASE, micro_batch=1, grad_accum=16), 0, "the micro-batch is 1 already"),
    (dataclasses.replace(BASE, oom_backoffs=3), 2, "the micro-batch was halved 3 times already"),
    (BASE, 10, "several training processes"),
], ids=["given", "off", "late", "micro-1", "backoffs", "processes"])
def test_out_of_memory_message_says_where_why_and_what_to_change(p, steps, why):
    msg = probes.out_of_memory_message(p, hw(80), "CUDA out of memory. Tried to allocate 2.00 GiB", steps)
    assert f"at micro-batch {p.micro_batch} x {p.grad_accum} accumulation steps" in msg
    assert (", before the first step" in msg) == (steps == 0)
    assert (f"{steps} optimizer steps into the attempt" in msg) == (steps > 0)
    assert f"estimated {p.estimate.gib()} GiB of 80.0 GiB" in msg
    assert f"(not retried: {why})" in msg
    for field in ("training.batchSize", "training.gradientCheckpointing", "training.maxLength", "lora.quantization"):
        assert field in msg
    assert msg.endswith("Tried to allocate 2.00 GiB")


def test_out_of_memory_message_without_an_estimate():
    msg = probes.out_of_memory_message(plan(hw(None)), hw(None), "oom", 0)
    # neither an estimate nor the card's memory
    assert msg.startswith("CUDA out of memory at micro-batch 4 x 4 accumulation steps, before the first step "
                          "(not retried: ")


def test_is_out_of_memory():
    assert probes.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert probes.is_out_of_memory(RuntimeError("CUBLAS_STATUS_ALLOC_FAILED: out of memory"))
    assert not probes.is_out_of_memory(ValueError("out of memory"))
    assert not probes.is_out_of_memory(RuntimeError("device-side assert triggered"))


# ---------------------------------------------------------------------------------------------
# 7. throughput
# ---------------------------------------------------------------------------------------------
def test_throughput_meter_leaves_out_the_warm_up_steps():
    m = throughput.ThroughputMeter(flops_per_token=1.5e10, peak_tflops=989.4)
    for seconds, tokens in [(30.0, 100), (5.0, 100)] + [(0.4, 8192)] * 3:  # warm-up: slow, few tokens
        m.add_step(seconds, tokens)
    assert m.warmup_steps == 2 and (m.steps, m.tokens) == (5, 3 * 8192)
    assert m.tokens_per_second == pytest.approx(20480.0)
    assert m.tflops == pytest.approx(20480.0 * 1.5e10 / 1e12)  # 307.2
    assert m.mfu_percent == pytest.approx(100 * 307.2 / 989.4)


def test_throughput_meter_none_when_unknown():
    warm = throughput.ThroughputMeter(1.5e10, 989.4)
    warm.add_step(1.0, 1000)
    warm.add_step(1.0, 1000)
    assert (warm.tokens_per_second, warm.tflops, warm.mfu_percent) == (None, None, None)  # warm-up only
    no_peak = throughput.ThroughputMeter(1.5e10, None, warmup_steps=0)
    no_peak.add_step(1.0, 1000)
    assert no_peak.tflops == pytest.approx(15.0) and no_peak.mfu_percent is None
    no_flops = throughput.ThroughputMeter(None, 989.4, warmup_steps=0)
    no_flops.add_step(1.0, 1000)
    assert no_flops.tokens_per_second == 1000.0 and no_flops.tflops is None and no_flops.mfu_percent is None


def test_throughput_callback_times_steps_and_counts_their_tokens():
    from transformers import TrainerControl, TrainerState

    clock, seen = Clock(), []
    meter = throughput.ThroughputMeter(1e10, 100.0, warmup_steps=1)
    cb = throughput.make_throughput_callback(meter, lambda m, peak: seen.append((m.tokens_per_second, peak)),
                                             cuda=False, clock=clock)
    state = TrainerState(num_input_tokens_seen=0)
    state.is_world_process_zero = True
    for t0, tokens in [(0.0, 500), (10.0, 2000), (13.0, 4000)]:
        clock.t = t0
        cb.on_step_begin(None, state, TrainerControl())
        clock.t, state.num_input_tokens_seen = t0 + 1.0, state.num_input_tokens_seen + tokens
        cb.on_step_end(None, state, TrainerControl())  # the 9 s and 2 s between steps are not counted
    cb.on_log(None, state, TrainerControl())
    assert seen == [(3000.0, None)] and meter.mfu_percent == pytest.approx(30.0)


# ---------------------------------------------------------------------------------------------
# 8. SFTConfig arguments from a plan
# ---------------------------------------------------------------------------------------------
def config(**training) -> TrainerConfig:
    return TrainerConfig(model={"name": "m"}, dataset={"uri": "d"}, output={"uri": "s3://b/r"}, training=training)


def kwargs(p, cuda: bool = True) -> dict:
    return sft_args.sft_kwargs(config(), "/tmp/o", cuda=cuda, dtype_name="bfloat16", has_eval=False, plan=p)


def test_sft_kwargs_follow_the_plan():
    p = dataclasses.replace(plan(hw(141)), checkpointing=True)  # micro 8 x 2, fused, length-grouped
    kw = kwargs(p)
    assert (kw["per_device_train_batch_size"], kw["per_device_eval_batch_size"]) == (8, 8)
    assert kw["gradient_accumulation_steps"] == 2
    assert kw["gradient_checkpointing"] is True and kw["use_liger_kernel"] is True
    assert kw["train_sampling_strategy"] == "group_by_length"
    assert kwargs(dataclasses.replace(p, fused_kernels=False))["use_liger_kernel"] is False
    assert "train_sampling_strategy" not in kwargs(dataclasses.replace(p, batching="padding-free"))
    cpu = kwargs(p, cuda=False)  # a plan never turns GPU features on for a CPU run
    assert cpu["gradient_checkpointing"] is False and cpu["use_liger_kernel"] is False


def test_sft_kwargs_without_a_plan_take_the_spec_defaults():
    for cuda in (True, False):
        kw = kwargs(None, cuda=cuda)
        assert (kw["per_device_train_batch_size"], kw["gradient_accumulation_steps"]) == (4, 4)
        assert kw["gradient_checkpointing"] is cuda and kw["use_liger_kernel"] is False
        assert kw["torch_compile"] is False


# ---------------------------------------------------------------------------------------------
# 9. result_hash of legacy specs
# ---------------------------------------------------------------------------------------------
LEGACY = dict(model={"name": "microsoft/Phi-3-mini-4k-instruct"}, dataset={"uri": "s3://data/chat.jsonl"},
              output={"uri": "s3://out/run"})


def spec_hash(**training) -> str:
    return TrainerConfig.model_validate({**LEGACY, "training": training}).result_hash()


def test_result_hash_of_legacy_specs_is_unchanged():
    # Computed with api/lft_api/spec.py before training.performance (commit 0132322^).
    assert spec_hash() == spec_hash(batchSize=4, gradientCheckpointing=True) == "2b1812f8235e2850"
    assert spec_hash(batchSize=8, maxLength=1024, packing=True) == "c5b89548deb4766f"


def test_result_hash_ignores_performance_only_fields_and_sees_the_others():
    base = spec_hash()
    assert spec_hash(performance="off", fusedKernels=True, compile=True) == base
    assert spec_hash(fusedKernels=False) == base
    for changed in ({"batchSize": 8}, {"gradientCheckpointing": False}, {"learningRate": 1e-4}, {"maxLength": 1024},
                    {"gradientAccumulationSteps": 2}):
        assert spec_hash(**changed) != base, changed


# ---------------------------------------------------------------------------------------------
# 10. the Reporter's plan and throughput
# ---------------------------------------------------------------------------------------------
def test_plan_event_is_forced_and_throughput_rides_on_the_next_log():
    clock, bodies, out = Clock(), [], io.StringIO()
    reporter = progress.Reporter([progress.StatusSink(bodies.append, min_interval=60.0, clock=clock),
                                  progress.StdoutSink(out)], total_steps=20)
    reporter.advanced(1, 20, None)
    reporter.step_logged(2.0, None, None)  # the first patch: the next unforced one waits 60 s
    p = plan(hw(141), packing=True)
    block = probes.status_block(p, hw(141), performance.flops_per_token(PHI3, PHI3_LORA, 2048))
    reporter.performance_planned(block)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert lines[-1]["kind"] == "plan" and lines[-1]["performance"] == block.to_wire()
    assert len(bodies) == 2 and bodies[-1]["status"]["performance"] == block.to_wire()  # forced
    assert block.to_wire()["microBatchSize"] == 8 and block.to_wire()["estimatedPeakMemoryGiB"] == 74.22

    reporter.throughput_measured(18337.04, 293.26, 29.64, 42.216)
    assert len(out.getvalue().splitlines()) == 2  # no event of its own
    clock.t = 61.0
    reporter.advanced(10, 20, 0.5)
    reporter.step_logged(1.5, None, None)
    log = json.loads(out.getvalue().splitlines()[-1])
    assert log["kind"] == "log" and "performance" not in log
    assert (log["tflops"], log["mfuPercent"], log["peakMemoryGiB"]) == (293.3, 29.6, 42.22)
    status = bodies[-1]["status"]["performance"]
    assert status == {**block.to_wire(), "tokensPerSecond": 18337.0, "tflops": 293.3, "mfuPercent": 29.6,
                      "peakMemoryGiB": 42.22}


def test_throughput_without_a_plan_and_unknown_figures():
    out = io.StringIO()
    reporter = progress.Reporter([progress.StdoutSink(out)])
    reporter.throughput_measured(1000.0, None, None, None)  # CPU: no FLOP count or peak
    reporter.step_logged(1.0, None, None)
    log = json.loads(out.getvalue())
    assert not {"tflops", "mfuPercent", "peakMemoryGiB", "performance"} & set(log)
    assert reporter.performance == Performance(tokens_per_second=1000.0)
