"""Two knobs of spec.training (issue #23), with their CEL rules: earlyStopping, and extra (TRL/PEFT settings that
have no typed field). Part of training_spec.py's models, kept apart for size. Imports only pydantic.

training.extra is a map of string to string. Why strings: the CRD's schema is structural with no
x-kubernetes-preserve-unknown-fields anywhere (crdgen refuses one), and a structural schema cannot type a value
as "string, number or boolean" (the only union it has is int-or-string). A string types every value the same
way, lists and objects included (as JSON text); the trainer reads each value as JSON when that gives the type
the SFTConfig or LoraConfig field declares, else as the text itself, and checks it against that type
(model/extra_settings.py). The keys the run owns are refused here, at apply time (CEL on the map's keys, and
the pydantic validator for resources stored before the rule); keys neither TRL nor PEFT knows are refused by
the trainer's pre-flight (the operator image has neither library).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic.json_schema import JsonDict

from .spec_base import SpecModel


class EarlyStoppingSpec(SpecModel):
    """Stop training when the eval loss stops improving (transformers' EarlyStoppingCallback)."""

    patience: int = Field(
        ge=1, le=1000,
        description="Evaluations in a row (every training.evalSteps) that do not improve on the best eval loss so "
                    "far before training stops (transformers' early_stopping_patience).",
    )
    threshold: float = Field(
        default=0.0, ge=0.0,
        description="How much an eval loss must fall below the best so far to count as an improvement "
                    "(early_stopping_threshold). 0: any decrease.",
    )


MAX_EXTRA_SETTINGS = 32
MAX_EXTRA_VALUE_LENGTH = 4096
ExtraValue = Annotated[str, Field(max_length=MAX_EXTRA_VALUE_LENGTH)]

# SFTConfig/LoraConfig fields that a typed field of the spec sets: training.extra refuses them, pointing there.
TYPED_EXTRA_KEYS: dict[str, str] = {
    "learning_rate": "training.learningRate", "lr_scheduler_type": "training.scheduler",
    "lr_scheduler_kwargs": "training.minLearningRate", "warmup_steps": "training.warmupSteps",
    "warmup_ratio": "training.warmupRatio", "weight_decay": "training.weightDecay", "optim": "training.optimizer",
    "max_grad_norm": "training.maxGradNorm", "neftune_noise_alpha": "training.neftuneNoiseAlpha",
    "per_device_train_batch_size": "training.batchSize", "per_device_eval_batch_size": "training.batchSize",
    "auto_find_batch_size": "training.performance", "train_sampling_strategy": "training.performance",
    "padding_free": "training.performance", "gradient_accumulation_steps": "training.gradientAccumulationSteps",
    "num_train_epochs": "training.epochs", "max_steps": "training.maxSteps", "max_length": "training.maxLength",
    "packing": "training.packing", "assistant_only_loss": "training.assistantOnlyLoss",
    "gradient_checkpointing": "training.gradientCheckpointing",
    "activation_checkpointing": "training.gradientCheckpointing", "use_liger_kernel": "training.fusedKernels",
    "liger_kernel_config": "training.fusedKernels", "torch_compile": "training.compile", "seed": "training.seed",
    "data_seed": "training.seed", "eval_strategy": "training.evalSteps", "eval_steps": "training.evalSteps",
    "report_to": "training.reportTo", "logging_steps": "training.loggingSteps",
    "save_steps": "checkpointing.everySteps", "save_total_limit": "checkpointing.keepLast",
    "metric_for_best_model": "training.earlyStopping", "greater_is_better": "training.earlyStopping",
    "load_best_model_at_end": "training.earlyStopping",
    "bf16": "model.dtype", "fp16": "model.dtype", "bf16_full_eval": "model.dtype", "fp16_full_eval": "model.dtype",
    "model_init_kwargs": "model.dtype and model.attnImplementation", "trust_remote_code": "model.trustRemoteCode",
    "chat_template_path": "model.chatTemplate", "use_cpu": "resources.gpus", "r": "lora.r", "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout", "target_modules": "lora.targetModules", "bias": "lora.bias",
    "use_dora": "lora.useDora", "use_rslora": "lora.rslora", "init_lora_weights": "lora.init",
    "loftq_config": "lora.init", "eva_config": "lora.init", "corda_config": "lora.init",
}
# Fields the operator sets itself (or that would break what it relies on): refused, saying so.
OPERATOR_EXTRA_KEYS: tuple[str, ...] = (
    "output_dir", "run_name", "resume_from_checkpoint", "ignore_data_skip", "restore_callback_states_from_checkpoint",
    "overwrite_output_dir", "do_train", "do_eval", "do_predict", "eval_on_start", "local_rank", "accelerator_config",
    "parallelism_config", "disable_tqdm", "include_num_input_tokens_seen", "dataloader_num_workers",
    "remove_unused_columns", "gradient_checkpointing_kwargs", "activation_checkpointing_kwargs",
    "completion_only_loss", "eos_token", "pad_token",
    "shuffle_dataset", "length_column_name", "label_names", "project", "enable_jit_checkpoint", "task_type",
    "peft_type", "base_model_name_or_path", "revision", "inference_mode", "auto_mapping", "peft_version",
)
# Families of fields the operator owns: the Hub, distribution, checkpoints, logging, the dataset, the trackers.
OPERATOR_EXTRA_PREFIXES: tuple[str, ...] = (
    "hub_", "push_to_hub", "deepspeed", "fsdp", "ddp_", "save_", "logging_", "dataset_", "trackio_",
)


def owned_extra_key(key: str) -> str | None:
    """Why training.extra may not set `key` (a sentence to follow "training.extra.<key>: "), or None."""
    if key in TYPED_EXTRA_KEYS:
        return f"use {TYPED_EXTRA_KEYS[key]} instead"
    if key in OPERATOR_EXTRA_KEYS or key.startswith(OPERATOR_EXTRA_PREFIXES):
        return "set by the operator, not settable"
    return None


def _cel_map() -> str:
    hints = {**{k: f"use {v} instead" for k, v in TYPED_EXTRA_KEYS.items()},
             **{k: "set by the operator, not settable" for k in OPERATOR_EXTRA_KEYS}}
    return "{" + ", ".join(f"'{k}': '{v}'" for k, v in hints.items()) + "}"


def _cel_prefixed(var: str) -> str:
    return "[" + ", ".join(f"'{p}'" for p in OPERATOR_EXTRA_PREFIXES) + f"].exists(p, {var}.startsWith(p))"


def extra_schema() -> JsonDict:
    """training.extra's CEL rules (x-kubernetes-validations on the map; self is the map, k a key). Bounded:
    at most MAX_EXTRA_SETTINGS keys, and each key is only compared with constants. Static messages: a
    messageExpression naming the keys (filter/map/join over the map) is refused by the API server, whose cost
    estimate for it is over 100 times its budget (map keys have no length bound); the operator's own check
    (check_extra_keys, on resources the API server let through before these rules) names them."""
    owned = _cel_map()
    return {"x-kubernetes-validations": [
        {"rule": f"self.all(k, !(k in {owned}))",
         "message": "training.extra sets a field that a typed field or the operator owns (e.g. learning_rate: use "
                    "training.learningRate; output_dir: set by the operator); the list: docs/knobs.md"},
        {"rule": f"self.all(k, !{_cel_prefixed('k')})",
         "message": "training.extra sets a field of a family the operator owns (" +
                    ", ".join(p + "*" for p in OPERATOR_EXTRA_PREFIXES) + ")"},
    ]}


def check_extra_keys(extra: dict[str, str] | None) -> dict[str, str] | None:
    """The pydantic validator of training.extra: the owned keys refused, each named."""
    problems = [f"training.extra.{k}: {why}" for k in sorted(extra or {}) if (why := owned_extra_key(k))]
    if problems:
        raise ValueError("; ".join(problems))
    return extra
