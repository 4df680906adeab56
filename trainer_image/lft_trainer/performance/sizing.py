"""Sizing a run to its GPU: the performance plan before the weights load (reported in status.performance),
and what an out-of-memory back-off needs: the adapter's starting weights, and freeing a failed attempt."""

from __future__ import annotations

import logging
from typing import Any

from lft_api.conditions import Reason
from lft_api.spec import TrainerConfig

from ..errors import InvalidInput
from ..reporting.progress import Reporter
from ..run.distributed import is_main
from . import plan as performance
from . import probes

log = logging.getLogger(__name__)


def plan_performance(config: TrainerConfig, model_dir: str, mean_tokens: float | None,
                     reporter: Reporter, gpu_memory_gib: float | None = None,
                     ) -> tuple[performance.Plan, performance.Hardware, float | None]:
    """The memory estimate and the plan, before the weights load; reported in status.performance."""
    shape = probes.probe_shape(model_dir, config.model.revision, config.model.trust_remote_code)
    hw = probes.probe_hardware(shape.model_type if shape else "", gpu_memory_gib)
    if config.training.fused_kernels and hw.cuda and not hw.fused_kernels_available:
        raise InvalidInput(Reason.INVALID_CONFIG, "training.fusedKernels is true, but liger-kernel is not installed in the "
                           f"trainer image or does not support model type {shape.model_type if shape else 'unknown'!r}"
                           ": use the GPU image, or leave fusedKernels unset", field="training.fusedKernels")
    plan = performance.make_plan(config.training, config.lora, config.model.attn_implementation, hw, shape)
    flops = None
    if shape is not None:
        # The attention span of a token: its row's length (packed rows attend only within themselves).
        span = min(config.training.max_length, mean_tokens or config.training.max_length)
        flops = performance.flops_per_token(shape, shape.lora_params(config.lora.target_modules, config.lora.r), span)
    if is_main():
        log.info("performance plan: %s", "; ".join(plan.choices))
        reporter.performance_planned(probes.status_block(plan, hw, flops))
    return plan, hw, flops


def release_memory(trainer) -> None:
    import gc

    import torch

    trainer.model.zero_grad(set_to_none=True)
    trainer.optimizer = trainer.lr_scheduler = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def trainable_snapshot(peft_model) -> dict[str, Any]:
    """A CPU copy of the adapter's starting weights (LoRA: megabytes)."""
    return {name: p.detach().to("cpu", copy=True) for name, p in peft_model.named_parameters() if p.requires_grad}


def restore_trainable(peft_model, snapshot: dict[str, Any], seed: int) -> None:
    """The adapter's starting weights and the seeded RNGs: the attempt starts again as it first did."""
    import torch
    from transformers import set_seed

    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if name in snapshot:
                p.copy_(snapshot[name])
    set_seed(seed)
