"""The probes of training.performance (they import torch): the GPU, the model's shape on the meta device;
out-of-memory errors and what to tell the user about them; the status.performance block."""

from __future__ import annotations

import logging
from typing import Optional

from .plan import GIB, MAX_OOM_BACKOFFS, OOM_RESTART_STEPS, Hardware, ModelShape, Plan, shape_from_model

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------


def probe_hardware(model_type: str, gpu_memory_gib: float | None = None) -> Hardware:
    """The GPU (and what it supports for model_type); gpu_memory_gib (settings): the memory the plan may fill."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        return Hardware(cuda=False)
    from .attention import cuda_varlen_kernel

    props = torch.cuda.get_device_properties(0)
    varlen = ("flash_attention_2" if importlib.util.find_spec("flash_attn") is not None
              else "varlen" if cuda_varlen_kernel() is not None else None)
    memory = int(props.total_memory)
    if gpu_memory_gib is not None:
        memory = int(gpu_memory_gib * GIB)
    return Hardware(True, props.name, memory, _liger_supports(model_type), varlen)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA out of memory (torch's error, or a kernel library's RuntimeError saying so)."""
    name = type(exc).__name__
    return name == "OutOfMemoryError" or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def out_of_memory_message(plan: Plan, hw: Hardware, error: str, steps_done: int) -> str:
    """What ran out, the estimate, why it was not retried, and what to change."""
    where = (f"at micro-batch {plan.micro_batch} x {plan.grad_accum} accumulation steps"
             + (f", {steps_done} optimizer steps into the attempt" if steps_done else ", before the first step"))
    est = f"; estimated {plan.estimate.gib()} GiB" if plan.estimate else ""
    of = f" of {hw.gpu_memory / GIB:.1f} GiB" if hw.gpu_memory else ""
    if plan.micro_batch_explicit:
        why = "the micro-batch was given (training.batchSize)"
    elif not plan.auto:
        why = "training.performance is off"
    elif steps_done > OOM_RESTART_STEPS:
        why = f"past the first {OOM_RESTART_STEPS} steps the memory need is not a start-up peak"
    elif plan.micro_batch == 1:
        why = "the micro-batch is 1 already"
    elif plan.oom_backoffs >= MAX_OOM_BACKOFFS:
        why = f"the micro-batch was halved {plan.oom_backoffs} times already"
    else:
        why = "several training processes"
    return (f"CUDA out of memory {where}{est}{of} (not retried: {why}). Lower training.batchSize (or leave it "
            "unset with performance auto), set training.gradientCheckpointing true, lower training.maxLength, "
            f"or use lora.quantization 4bit. {error}")


def _liger_supports(model_type: str) -> bool:
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except Exception:  # not installed, or no Triton/GPU to import it with
        return False
    return model_type in MODEL_TYPE_TO_APPLY_LIGER_FN


def probe_shape(model_dir: str, revision: Optional[str], trust_remote_code: bool) -> Optional[ModelShape]:
    """The model's linear layers from an instance on the meta device (no memory, no weights read)."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        cfg = AutoConfig.from_pretrained(model_dir, revision=revision, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg, trust_remote_code=trust_remote_code)
        return shape_from_model(model)
    except Exception as exc:  # an estimate is a help, not a requirement
        log.warning("no memory estimate: %s", str(exc)[:300])
        return None


def status_block(plan: Plan, hw: Hardware, flops: Optional[float]):
    """status.performance at the start of training (throughput fields come later)."""
    from lft_api.contract import Performance

    return Performance(
        gpu=hw.gpu_name, gpu_memory_gib=round(hw.gpu_memory / GIB, 1) if hw.gpu_memory else None,
        estimated_peak_memory_gib=plan.estimate.gib() if plan.estimate else None,
        micro_batch_size=plan.micro_batch, gradient_accumulation_steps=plan.grad_accum,
        gradient_checkpointing=plan.checkpointing, fused_kernels=plan.fused_kernels,
        attention=plan.attention or "sdpa", batching=plan.batching, compiled=plan.compile,
        oom_backoffs=plan.oom_backoffs, choices=list(plan.choices),
        flops_per_token=round(flops) if flops else None,
    )
