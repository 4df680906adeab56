"""TrainingSpec: the optimisation settings of the trainer's configuration (spec.training), with its CEL rules.

Part of spec.py's models (re-exported there), kept apart for size. Imports only pydantic.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import ConfigDict, Field, field_validator, model_validator

from .spec_base import CelRules, SpecModel
from .tracking_spec import MlflowSpec, ReportTarget, WandbSpec
from .training_knobs import MAX_EXTRA_SETTINGS, EarlyStoppingSpec, ExtraValue, check_extra_keys, extra_schema

# TRL/transformers `optim` names (transformers.training_args.OptimizerNames) that the trainer image can run:
# torch's own, and bitsandbytes' (the GPU image has it). Not offered: those that need a package the image lacks
# (galore, apollo, lomo, schedule-free, torchao, grokadamw, stable_adamw) or other hardware (xla, npu).
TORCH_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adagrad", "rmsprop")
BNB_OPTIMIZERS = (  # bitsandbytes: CUDA only (transformers' trainer_optimizer._BITSANDBYTES_OPTIMIZERS)
    "adamw_8bit", "adamw_bnb_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "lion_8bit", "lion_32bit",
    "paged_lion_8bit", "paged_lion_32bit", "ademamix", "ademamix_8bit", "paged_ademamix_8bit", "paged_ademamix_32bit",
    "rmsprop_bnb", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit",
)
Optimizer = Literal[
    "adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adagrad", "rmsprop",
    "adamw_8bit", "adamw_bnb_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "lion_8bit", "lion_32bit",
    "paged_lion_8bit", "paged_lion_32bit", "ademamix", "ademamix_8bit", "paged_ademamix_8bit", "paged_ademamix_32bit",
    "rmsprop_bnb", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit",
]
DEFAULT_WARMUP_RATIO = 0.03

MAX_NODES = 64
MAX_PROCESSES_PER_NODE = 64


# The schedule's cross-field rules (TrainingSpec._schedule); they read fields added with them, so a resource
# stored before them passes unchanged.
_SCHEDULE_RULES: CelRules = [
    {"rule": "!has(self.warmupSteps) || !has(self.warmupRatio)",
     "message": "training.warmupSteps and training.warmupRatio are exclusive: set one", "fieldPath": ".warmupSteps"},
    {"rule": "!has(self.minLearningRate) || !has(self.scheduler) || self.scheduler == 'cosine'",
     "message": "training.minLearningRate is the floor of the cosine schedule: it needs scheduler cosine",
     "fieldPath": ".minLearningRate"},
    {"rule": "!has(self.minLearningRate) || !has(self.learningRate) || self.minLearningRate < self.learningRate",
     "message": "training.minLearningRate must be below training.learningRate", "fieldPath": ".minLearningRate"},
]


def _tracker_rules(name: str) -> CelRules:
    """training.reportTo <name> and training.<name> go together (TrainingSpec._tracking_settings)."""
    return [
        {"rule": f"!has(self.reportTo) || !('{name}' in self.reportTo) || has(self.{name})",
         "message": f"training.reportTo lists {name}: set training.{name} (its settings)",
         "fieldPath": f".{name}", "reason": "FieldValueRequired"},
        {"rule": f"!has(self.{name}) || (has(self.reportTo) && '{name}' in self.reportTo)",
         "message": f"training.{name} is set but training.reportTo does not list {name}: add it, or remove the settings",
         "fieldPath": f".{name}"},
    ]


class TrainingSpec(SpecModel):
    """Optimisation settings."""

    # CEL rules of the CRD (x-kubernetes-validations, checked by the API server): the cross-field rules of
    # _tracking_settings; the pydantic validators stay, for resources stored before the rules existed.
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _tracker_rules("mlflow") + _tracker_rules("wandb")
                                                 + _SCHEDULE_RULES})

    epochs: float = Field(default=1.0, gt=0, description="Passes over the training set (ignored when maxSteps is set).")
    max_steps: Optional[int] = Field(default=None, ge=1, description="Stop after this many optimizer steps.")
    # 2e-4 is the usual LoRA rate (QLoRA paper, PEFT examples): the cookbook's 5e-6 is a full fine-tuning
    # rate and barely moves a rank-16 adapter, whose B matrix starts at zero.
    learning_rate: float = Field(default=2e-4, gt=0, le=1.0, description="Peak learning rate.")
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        default="cosine", description="Learning-rate schedule after warmup."
    )
    min_learning_rate: Optional[float] = Field(
        default=None, gt=0, le=1.0,
        description=(
            "Floor of the cosine schedule (transformers' cosine_with_min_lr, lr_scheduler_kwargs min_lr): the rate "
            "decays to this instead of 0. Needs scheduler cosine and must be below learningRate. Unset: decay to 0."
        ),
    )
    # Optional since warmupSteps: unset is 0.03 (the former default), unless warmupSteps is set.
    warmup_ratio: Optional[float] = Field(
        default=None, ge=0.0, lt=1.0,
        description=f"Fraction of steps spent warming up. Unset: {DEFAULT_WARMUP_RATIO}, or none when warmupSteps is set.",
    )
    warmup_steps: Optional[int] = Field(
        default=None, ge=0,
        description="Optimizer steps spent warming up (exclusive with warmupRatio). Unset: warmupRatio applies.",
    )
    weight_decay: float = Field(default=0.0, ge=0.0, description="AdamW weight decay.")
    optimizer: Optional[Optimizer] = Field(
        default=None,
        description=(
            "TRL/transformers optim name. Unset: transformers' default (adamw_torch_fused with this torch). "
            "The bitsandbytes ones (adamw_8bit, adamw_bnb_8bit, paged_adamw_8bit, paged_adamw_32bit, lion_*, "
            "paged_lion_*, ademamix*, paged_ademamix_*, rmsprop_bnb*) need a GPU (resources.gpus >= 1)."
        ),
    )
    max_grad_norm: Optional[float] = Field(
        default=None, ge=0.0,
        description="Clip the gradient norm to this (0: no clipping). Unset: 1.0, transformers' default.",
    )
    neftune_noise_alpha: Optional[float] = Field(
        default=None, gt=0, le=100,
        description="NEFTune: uniform noise of this scale on the input embeddings while training (TRL "
                    "neftune_noise_alpha; the paper uses 5 to 15). Unset: none.",
    )
    batch_size: Optional[int] = Field(
        default=None, ge=1, le=4096,
        description=(
            "Per-device micro-batch size. Unset: 4, or under performance auto on a GPU the largest split of "
            "the effective batch (4 x gradientAccumulationSteps) that the memory estimate says fits."
        ),
    )
    gradient_accumulation_steps: int = Field(
        default=4, ge=1,
        description="Micro-batches per optimizer step (performance auto may re-split an unset batchSize, keeping the product).",
    )
    max_length: int = Field(default=2048, ge=16, le=1048576, description="Maximum tokens per training sequence.")
    packing: bool = Field(default=False, description="Pack several short samples into one sequence.")
    assistant_only_loss: bool = Field(
        default=False, description="Compute the loss on assistant turns only (messages format)."
    )
    gradient_checkpointing: Optional[bool] = Field(
        default=None,
        description=(
            "Recompute activations in the backward pass: less GPU memory, about a third more compute. Unset: "
            "on only when the memory estimate needs it (performance auto), on when performance is off. Never on CPU."
        ),
    )
    performance: Literal["auto", "off"] = Field(
        default="auto",
        description=(
            "auto: on a GPU, size the micro-batch and gradient checkpointing from the memory estimate, use "
            "fused kernels and a variable-length attention kernel for packed rows when available, and halve the "
            "micro-batch on an out-of-memory error within the first 10 steps (keeping the effective batch). Explicit "
            "fields always win; every choice is written to status.performance and the summary. off: the fields "
            "as given, defaults for the unset ones."
        ),
    )
    fused_kernels: Optional[bool] = Field(
        default=None,
        description="Liger kernels (RMSNorm, RoPE, SwiGLU) on GPU. Unset: on under performance auto when installed.",
    )
    compile: bool = Field(default=False, description="torch.compile the model (GPU; compiling takes minutes).")
    seed: int = Field(default=42, description="Seed for data shuffling, the eval split and LoRA initialisation.")
    logging_steps: int = Field(default=10, ge=1, description="Report loss and progress every N steps.")
    eval_steps: Optional[int] = Field(
        default=None, ge=1, description="Evaluate every N steps; unset: at the end of each epoch (and before step 1)."
    )
    early_stopping: Optional[EarlyStoppingSpec] = Field(
        default=None,
        description=(
            "Stop when the eval loss has not improved for `patience` evaluations in a row; the run still succeeds, "
            "and the summary's stoppedEarly and the Succeeded condition say at which step. Needs training.evalSteps "
            "and an eval set (dataset.evalSplit, or dataset.evalFraction above 0). The adapter is the weights at "
            "the step training stopped, not those of the best evaluation. Unset: train to the end."
        ),
    )
    extra: Optional[dict[str, ExtraValue]] = Field(
        default=None,
        max_length=MAX_EXTRA_SETTINGS,
        json_schema_extra=extra_schema(),
        description=(
            "Settings of TRL's SFTConfig or PEFT's LoraConfig that have no field here, by their Python name (e.g. "
            "adam_beta2: \"0.95\", label_smoothing_factor: \"0.1\", layers_to_transform: \"[0, 1]\"). Values are "
            "strings, read as JSON when that gives the field's type (numbers, booleans, lists, objects), else as "
            "text. Each key goes to the config that has it; a name neither has is refused (UnknownExtraSetting), "
            "as is a value of the wrong type (InvalidExtraSetting). Fields a typed field sets (learning_rate: use "
            "training.learningRate) and those the operator owns (output_dir, save_*, hub_*, deepspeed, fsdp*...) "
            "are refused. The summary's resolved block shows the values used. Unset: none."
        ),
    )
    nodes: int = Field(
        default=1,
        ge=1,
        le=MAX_NODES,
        description=(
            "Pods the run spans (multi-node DDP, launched by torchrun with a static rendezvous). Each pod gets "
            "spec.resources; world size = nodes x processes per pod. 1: one pod, as without this field."
        ),
    )
    report_to: list[ReportTarget] = Field(
        default_factory=list,
        max_length=3,
        # A set: the API server refuses a duplicate ("Duplicate value"), as _tracking_settings does.
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description=(
            "Experiment tracking: tensorboard (event files under <output>/tensorboard/, uploaded at every checkpoint "
            "and at the end), mlflow (settings in training.mlflow), wandb (settings in training.wandb). Empty: none."
        ),
    )
    mlflow: Optional[MlflowSpec] = Field(default=None, description="MLflow settings, for reportTo mlflow.")
    wandb: Optional[WandbSpec] = Field(default=None, description="Weights & Biases settings, for reportTo wandb.")

    @field_validator("extra")
    @classmethod
    def _extra_keys(cls, extra: dict[str, str] | None) -> dict[str, str] | None:
        return check_extra_keys(extra)

    def tracking_secrets(self) -> list[tuple[str, str]]:
        """(field path under spec, Secret name) of the trackers' credentials Secrets (mounted as envFrom)."""
        refs = [(name, getattr(self, name)) for name in ("mlflow", "wandb")]
        return [(f"training.{name}.credentialsSecretRef", s.credentials_secret_ref.name) for name, s in refs
                if s is not None and s.credentials_secret_ref is not None]

    @model_validator(mode="after")
    def _schedule(self) -> "TrainingSpec":
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ValueError("warmupSteps and warmupRatio are exclusive: set one")
        if self.min_learning_rate is not None:
            if self.scheduler != "cosine":
                raise ValueError(f"minLearningRate is the floor of the cosine schedule: it needs scheduler cosine, "
                                 f"not {self.scheduler}")
            if self.min_learning_rate >= self.learning_rate:
                raise ValueError(f"minLearningRate {self.min_learning_rate} must be below learningRate "
                                 f"{self.learning_rate}")
        return self

    def resolved_warmup(self) -> float | int:
        """transformers' warmup_steps: the steps (an int), or the ratio (a float < 1)."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return self.warmup_ratio if self.warmup_ratio is not None else DEFAULT_WARMUP_RATIO

    @model_validator(mode="after")
    def _tracking_settings(self) -> "TrainingSpec":
        if len(set(self.report_to)) != len(self.report_to):
            raise ValueError(f"reportTo lists an integration twice: {self.report_to}")
        for name in ("mlflow", "wandb"):
            wanted, given = name in self.report_to, getattr(self, name) is not None
            if wanted and not given:
                raise ValueError(f"reportTo {name} needs training.{name} (its settings)")
            if given and not wanted:
                raise ValueError(f"training.{name} is set but reportTo does not list {name}: add it, or remove the settings")
        return self
    num_processes: int | Literal["auto"] = Field(
        default="auto",
        # The schema of an int-or-string cannot say "auto or 1..64": CEL does (_processes_in_range).
        json_schema_extra={"x-kubernetes-validations": [{
            "rule": f"type(self) == string ? self == 'auto' : (self >= 1 && self <= {MAX_PROCESSES_PER_NODE})",
            "messageExpression": f"'training.numProcesses must be auto or 1 to {MAX_PROCESSES_PER_NODE}, not ' + "
                                 "string(self)",
        }]},
        description=(
            "Training processes per pod (DDP ranks, 1 to 64). auto: one per GPU of the pod (spec.resources.gpus), "
            "1 on CPU. A pod with more than one GPU always runs one process per GPU: 1 (the default of earlier "
            "versions, stored in existing resources) counts as auto there, and any other number must equal "
            "spec.resources.gpus."
        ),
    )

    @field_validator("num_processes")
    @classmethod
    def _processes_in_range(cls, n: int | str) -> int | str:
        if n != "auto" and not 1 <= int(n) <= MAX_PROCESSES_PER_NODE:
            raise ValueError(f"must be auto or 1 to {MAX_PROCESSES_PER_NODE}, not {n}")
        return n

    def processes_per_node(self, gpus: int) -> int:
        """numProcesses resolved for a pod with `gpus` GPUs (auto: one per GPU, 1 on CPU)."""
        if self.num_processes == "auto":
            return max(gpus, 1)
        return self.num_processes

    def world_size(self, gpus: int) -> int:
        return self.nodes * self.processes_per_node(gpus)
