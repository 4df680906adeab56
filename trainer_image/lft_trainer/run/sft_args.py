"""The spec and the performance plan -> TRL's SFTConfig arguments. Pure, unit-tested."""

from __future__ import annotations

from typing import Any

from lft_api.spec import TrainerConfig, TrainingSpec

from ..model import extra_settings
from ..performance import plan as performance
from .distributed import world_size


# ---------------------------------------------------------------------------------------------
def sft_kwargs(config: TrainerConfig, output_dir: str, cuda: bool, dtype_name: str, has_eval: bool,
               plan: performance.Plan | None = None, ddp_timeout: int | None = None) -> dict[str, Any]:
    """SFTConfig arguments from the spec and the performance plan. Pure, unit-tested."""
    t = config.training
    if plan is None:
        plan = performance.make_plan(t, config.lora, config.model.attn_implementation,
                                     performance.Hardware(cuda=cuda), None)
    kw: dict[str, Any] = dict(
        output_dir=output_dir,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.resolved_warmup(),  # a float < 1 is a ratio of the total steps in this transformers
        weight_decay=t.weight_decay,
        per_device_train_batch_size=plan.micro_batch,
        per_device_eval_batch_size=plan.micro_batch,
        gradient_accumulation_steps=plan.grad_accum,
        max_length=t.max_length,
        packing=t.packing,
        # The rows arrive tokenized, their labels already masked (trainset.py: assistantOnlyLoss, the completion
        # of prompt-completion rows); TRL's own flags would look for chat rows that are no longer there.
        assistant_only_loss=False,
        completion_only_loss=False,
        # Checkpointing recomputes activations to save GPU memory; on CPU memory is not the limit and
        # it only costs time (about a third more compute per step).
        gradient_checkpointing=bool(plan.checkpointing and cuda),
        gradient_checkpointing_kwargs={"use_reentrant": False},
        use_liger_kernel=bool(plan.fused_kernels and cuda),
        torch_compile=bool(plan.compile and cuda),
        seed=t.seed,
        data_seed=t.seed,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=config.checkpointing.every_steps,
        save_total_limit=2,  # local copies only; the remote retention is checkpointing.keepLast
        eval_strategy=("steps" if t.eval_steps else "epoch") if has_eval else "no",
        eval_steps=t.eval_steps,
        bf16=cuda and dtype_name == "bfloat16",
        fp16=cuda and dtype_name == "float16",
        use_cpu=not cuda,
        report_to=list(t.report_to),  # the environment they read: tracking.tracking_env
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        save_only_model=False,  # optimizer, scheduler and RNG state: resume exactly
        remove_unused_columns=True,
    )
    kw.update(knob_kwargs(t))
    if t.max_steps:
        kw["max_steps"] = t.max_steps
    else:
        kw["num_train_epochs"] = t.epochs
    if plan.batching == "length-grouped":
        kw["train_sampling_strategy"] = "group_by_length"
    if world_size() > 1 and not cuda:
        kw["ddp_backend"] = "gloo"
    if world_size() > 1 and ddp_timeout:
        kw["ddp_timeout"] = ddp_timeout  # settings.ddp_timeout: set by the operator on multi-node pods
    return kw


def knob_kwargs(t: TrainingSpec) -> dict[str, Any]:
    """The fine-tuning knobs that are set (issue #23). Those left unset are not passed: TRL's and transformers'
    own defaults apply, as before the knobs existed."""
    kw: dict[str, Any] = {}
    if t.optimizer is not None:
        kw["optim"] = t.optimizer
    if t.max_grad_norm is not None:
        kw["max_grad_norm"] = t.max_grad_norm
    if t.min_learning_rate is not None:  # cosine only (TrainingSpec._schedule)
        kw["lr_scheduler_type"] = "cosine_with_min_lr"
        kw["lr_scheduler_kwargs"] = {"min_lr": t.min_learning_rate}
    if t.neftune_noise_alpha is not None:
        kw["neftune_noise_alpha"] = t.neftune_noise_alpha
    if t.early_stopping is not None:
        # What transformers' EarlyStoppingCallback reads (run/early_stop.py): the eval loss, lower is better; the
        # Trainer keeps the best in state.best_metric. Not load_best_model_at_end: see early_stop.py.
        kw.update(metric_for_best_model="eval_loss", greater_is_better=False)
    if t.extra:
        kw.update(extra_settings.route(t.extra).sft)  # the keys of SFTConfig, typed (none that is set above)
    return kw
