"""The trainer's configuration: the one definition shared by the operator and the trainer.

The operator embeds these models in the LoRAFineTune spec (and generates the CRD schema from
them); it writes the trainer's part of a resource's spec, as JSON, into the ConfigMap that the
trainer reads with `TrainerConfig.from_file`. Field names are camelCase on the wire (Kubernetes
convention) and snake_case in Python.

This module imports only pydantic: the operator image has no torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal, Optional

from pydantic import ConfigDict, Field, model_validator

from .dataset_spec import (  # noqa: F401 (re-exported: spec.py is where the models are imported from)
    DATASET_URI_DOC,
    MAX_MIXTURE_SOURCES,
    ColumnsSpec,
    DatasetFormat,
    DatasetSpec,
    DatasetUri,
    MixtureSource,
)
from .oci_spec import PushSpec
from .spec_base import CelRules, SpecModel, ratcheting_rule
from .training_spec import (  # noqa: F401 (re-exported: spec.py is where the models are imported from)
    BNB_OPTIMIZERS,
    DEFAULT_WARMUP_RATIO,
    MAX_NODES,
    MAX_PROCESSES_PER_NODE,
    TORCH_OPTIMIZERS,
    Optimizer,
    TrainingSpec,
)


class ModelSpec(SpecModel):
    """The base model to fine-tune."""

    name: str = Field(
        min_length=1,
        description=(
            "Hugging Face model id (e.g. microsoft/Phi-3-mini-4k-instruct), or a URI/path to a model "
            "directory: s3://, gs://, file://, or an absolute path baked into the trainer image."
        ),
    )
    revision: Optional[str] = Field(
        default=None, description="Git revision (branch, tag or commit) of a Hugging Face model id."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto",
        description="Weights dtype. auto: bfloat16 on GPUs that support it, else float16 on GPU, float32 on CPU.",
    )
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        default="auto", description="Attention kernel. auto: sdpa where the model supports it."
    )
    trust_remote_code: bool = Field(
        default=False, description="Run modelling code shipped with the model. Off by default: it executes code."
    )
    adapter: Optional[str] = Field(
        default=None,
        min_length=1,
        # An object-store URI or an absolute path: a bare name would be a Hub id, which is not offered.
        pattern=r"^([a-zA-Z][a-zA-Z0-9+.-]*://.+|/.+)$",
        description=(
            "Continue training an existing LoRA adapter of this base model: the URI of its directory (s3:// with "
            "the run's storage credentials, gs://, az://, file://, or an absolute path in the trainer image), "
            "as another run's <output>/adapter/. Checked before training (reason AdapterNotUsable): "
            "adapter_config.json is there with peft_type LORA, its target modules exist in the model (a "
            "different base_model_name_or_path is only warned about). Its shape comes from the adapter: "
            "lora.r, alpha, targetModules, bias, useDora and rslora left at their defaults take the adapter's "
            "values, and set to other values they must equal them (else AdapterNotUsable); lora.dropout applies "
            "as set. Exclusive with lora.init other than default. Unset: a new adapter."
        ),
    )
    chat_template: Optional[str] = Field(
        default=None,
        min_length=1,
        description=(
            "The chat template that renders chat rows (and is saved with the adapter): inline Jinja, the name of a "
            "template TRL ships (phi3, qwen2_5, llama3...), an object-store URI of a .jinja file (s3://, gs://, "
            "az://), or a file inside the model's own directory (/path or file://, when model.name is a local "
            "path; symlinks and .. cannot leave it). No other file of the pod is read. Unset: the tokenizer's own; "
            "a tokenizer without one is refused when the dataset has chat rows (no template is chosen silently)."
        ),
    )


CONVERTED_INITS = ("pissa", "olora")
_LORA_RULES: CelRules = [
    # has(): the API server checks the rule against the lora default too, which has no init (an unset knob is left
    # out, so older specs keep their hash): without it the CRD is refused ("no such key: init").
    {"rule": "!has(self.init) || !(self.init in ['pissa', 'olora']) || "
             "((!has(self.quantization) || self.quantization == 'none') && (!has(self.useDora) || !self.useDora))",
     "messageExpression": "'lora.init ' + self.init + ' needs lora.quantization none and lora.useDora false: the "
                          "adapter converted for the unmodified base model is exact only then'",
     "fieldPath": ".init"},
]


class LoraSpec(SpecModel):
    """LoRA adapter settings (defaults: the Phi-3 cookbook recipe)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _LORA_RULES})

    r: int = Field(default=16, ge=1, le=1024, description="Rank of the LoRA update matrices.")
    alpha: int = Field(default=32, ge=1, le=4096, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["all-linear"],
        min_length=1,
        description=(
            'Module names to adapt. ["all-linear"] adapts every linear layer except the output head '
            "(on Phi-3: qkv_proj, o_proj, gate_up_proj, down_proj)."
        ),
    )
    bias: Literal["none", "all", "lora_only"] = Field(default="none", description="Which biases train.")
    use_dora: bool = Field(default=False, description="Weight-decomposed LoRA (DoRA).")
    quantization: Literal["none", "4bit", "8bit"] = Field(
        default="none",
        description="Quantize the frozen base model. 4bit is QLoRA (NF4, double quantization, bf16 compute). GPU only.",
    )
    rslora: bool = Field(
        default=False,
        description="Rank-stabilized LoRA (PEFT use_rslora): scale the update by alpha / sqrt(r) instead of alpha / r.",
    )
    init: Literal["default", "gaussian", "pissa", "olora"] = Field(
        default="default",
        description=(
            "Initialisation of the LoRA matrices (PEFT init_lora_weights). default: A Kaiming-uniform, B zero "
            "(PEFT's True); gaussian: A Gaussian scaled by the rank, B zero; pissa: A and B from the r principal "
            "singular vectors of each adapted weight (full SVD: minutes of CPU per billion parameters, before step "
            "1); olora: from its QR decomposition. pissa and olora move that part out of the base weights while "
            "training; the published adapter is PEFT's conversion (save_pretrained with "
            "path_initial_model_for_weight_conversion) to an adapter of the unmodified base model, of rank 2r "
            "and alpha 2 x alpha (x sqrt 2 with rslora), so serving it needs a --max-lora-rank of 2r; the "
            "checkpoints hold the unconverted adapter and are for resuming only. pissa and olora need "
            "quantization none and useDora false (the conversion is exact only then). Not offered: loftq (PEFT's "
            "loftq_init needs bitsandbytes and a CUDA or XPU device, and its adapter fits the quantized base, "
            "not the published one: PEFT cannot convert it)."
        ),
    )

    @model_validator(mode="after")
    def _init_converts(self) -> "LoraSpec":
        if self.init in CONVERTED_INITS:
            if self.quantization != "none":
                raise ValueError(f"init {self.init} needs quantization none: the adapter converted for the "
                                 f"unmodified base is exact only for an unquantized base (not {self.quantization})")
            if self.use_dora:
                raise ValueError(f"init {self.init} cannot be combined with useDora: PEFT's conversion to an adapter "
                                 "of the unmodified base covers plain LoRA only")
        return self


# TrainingSpec fields that change speed and memory, not the trained result (left out of result_hash).
PERFORMANCE_ONLY_FIELDS = ("performance", "fusedKernels", "compile")
# TrainingSpec fields that say where the run is reported, not what it trains (left out of result_hash).
TRACKING_FIELDS = ("reportTo", "mlflow", "wandb")


class CheckpointSpec(SpecModel):
    """Checkpoints uploaded to object storage, for resuming after pod loss or suspend."""

    every_steps: int = Field(default=100, ge=1, description="Save and upload a checkpoint every N optimizer steps.")
    keep_last: int = Field(default=2, ge=1, le=100, description="Checkpoints kept under the output URI; older ones are deleted.")


class OutputSpec(SpecModel):
    """Where results go."""

    uri: str = Field(
        min_length=1,
        description="Output prefix: s3://bucket/prefix, gs://, az://, file:// or a path. Adapter in <uri>/adapter/.",
    )
    merge_adapter: bool = Field(
        default=False, description="Also upload the base model with the adapter merged in, to <uri>/merged/."
    )
    overwrite: bool = Field(
        default=False,
        description=(
            "Replace another run's artifacts under uri: its checkpoints are deleted before training starts. "
            "Without it, a uri that holds another run's checkpoints, adapter or summary is refused (OutputInUse)."
        ),
    )
    resume_from: Optional[str] = Field(
        default=None,
        min_length=1,
        description=(
            "Continue deliberately from this checkpoint URI (e.g. s3://bucket/old-run/checkpoints/checkpoint-400), "
            "even one another run wrote. Without it, a run resumes only from its own checkpoints."
        ),
    )
    push: Optional[PushSpec] = Field(
        default=None,
        description=(
            "Also push the adapter, once uploaded to uri, to an OCI registry (status.adapter.oci: the reference "
            "with its digest). A push that fails fails the run; the adapter under uri stays."
        ),
    )


class StorageSpec(SpecModel):
    """How to reach object storage. Credentials come from the environment (a Secret), never from here."""

    endpoint_url: Optional[str] = Field(
        default=None,
        description="S3 endpoint for S3-compatible servers (MinIO, Ceph...), e.g. http://minio.storage:9000.",
    )
    region: Optional[str] = Field(default=None, description="S3 region.")


class EvaluationSpec(SpecModel):
    """Did it help? Completions of held-out prompts by the base model and by the tuned one, in samples.jsonl.

    Not part of result_hash: sampling reads the trained result, it does not change it.
    """

    samples: int = Field(
        default=3, ge=0, le=32,
        description=(
            "Prompts of the eval split (the first N rows; without an eval split, the last N train rows) completed "
            "greedily by the base model and by the tuned one after training, written to <output>/samples.jsonl "
            "and the summary. 0 disables."
        ),
    )
    max_new_tokens: int = Field(default=64, ge=1, le=4096, description="Longest completion, in tokens.")


# TrainerConfig's cross-field rules as CEL (x-kubernetes-validations on the spec; self is the spec).
TRAINER_CONFIG_RULES: CelRules = [
    ratcheting_rule(  # _assistant_only_needs_messages
        "!self.training.assistantOnlyLoss || self.dataset.format != 'text'",
        reads=("training.assistantOnlyLoss", "dataset.format"),
        message="training.assistantOnlyLoss needs chat rows: dataset.format must be messages, prompt-completion or "
                "auto, not text",
        fieldPath=".training.assistantOnlyLoss",
    ),
    # _assistant_only_needs_messages, for the sources of a mixture. Not ratcheting: no resource stored before the
    # rule has a mixture (it came with it), and comparing the mixture with oldSelf's (unbounded strings, 16 items)
    # would cost more than the API server's budget for one rule.
    {"rule": "!self.training.assistantOnlyLoss || !has(self.dataset.mixture) || "
             "self.dataset.mixture.all(s, !has(s.format) || s.format != 'text')",
     "message": "training.assistantOnlyLoss needs chat rows: no dataset.mixture[].format may be text",
     "fieldPath": ".dataset.mixture"},
    # _adapter_or_init
    ratcheting_rule(
        "!has(self.model.adapter) || !has(self.lora.init) || self.lora.init == 'default'",
        reads=("model.adapter", "lora.init"),
        message="model.adapter continues an existing adapter: lora.init (how a new adapter starts) must be default",
        fieldPath=".lora.init",
    ),
    ratcheting_rule(  # _early_stopping_needs_evaluation
        "!has(self.training.earlyStopping) || (has(self.training.evalSteps) && (has(self.dataset.evalSplit) || "
        "!has(self.dataset.evalFraction) || self.dataset.evalFraction > 0.0))",
        reads=("training.earlyStopping", "training.evalSteps", "dataset.evalSplit", "dataset.evalFraction"),
        message="training.earlyStopping needs evaluation: set training.evalSteps, and an eval set (dataset.evalSplit, "
                "or dataset.evalFraction above 0)",
        fieldPath=".training.earlyStopping",
    ),
]


class TrainerConfig(SpecModel):
    """Everything the trainer needs: the part of a LoRAFineTune's spec that the operator writes to the ConfigMap."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": TRAINER_CONFIG_RULES})

    model: ModelSpec
    dataset: DatasetSpec
    lora: LoraSpec = Field(default_factory=LoraSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    checkpointing: CheckpointSpec = Field(default_factory=CheckpointSpec)
    output: OutputSpec
    storage: StorageSpec = Field(default_factory=StorageSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)

    def credential_secrets(self) -> list[tuple[str, str]]:
        """(field path under spec, Secret name) of the Secrets whose keys become the trainer's environment
        (envFrom) besides the storage Secret: the trackers' and the OCI registry's credentials."""
        refs = self.training.tracking_secrets()
        oci = self.output.push.oci if self.output.push is not None else None
        if oci is not None and oci.credentials_secret_ref is not None:
            refs.append(("output.push.oci.credentialsSecretRef", oci.credentials_secret_ref.name))
        return refs

    @model_validator(mode="after")
    def _assistant_only_needs_messages(self) -> "TrainerConfig":
        if self.training.assistant_only_loss and self.dataset.format == "text":
            raise ValueError(
                "training.assistantOnlyLoss needs chat rows (dataset.format messages, prompt-completion or auto), "
                f"not {self.dataset.format}"
            )
        texts = [i for i, s in enumerate(self.dataset.mixture or []) if s.format == "text"]
        if self.training.assistant_only_loss and texts:
            raise ValueError(f"training.assistantOnlyLoss needs chat rows, not dataset.mixture[{texts[0]}].format text")
        return self

    @model_validator(mode="after")
    def _adapter_or_init(self) -> "TrainerConfig":
        if self.model.adapter is not None and self.lora.init != "default":
            raise ValueError(f"model.adapter continues an existing adapter: lora.init (how a new adapter starts) "
                             f"must be default, not {self.lora.init}")
        return self

    @model_validator(mode="after")
    def _early_stopping_needs_evaluation(self) -> "TrainerConfig":
        if self.training.early_stopping is None:
            return self
        missing = ([] if self.training.eval_steps else ["training.evalSteps"]) + (
            [] if self.dataset.eval_split or self.dataset.eval_fraction > 0
            else ["an eval set (dataset.evalSplit, or dataset.evalFraction above 0)"])
        if missing:
            raise ValueError(f"training.earlyStopping needs evaluation: set {' and '.join(missing)}")
        return self

    def result_hash(self) -> str:
        """sha256 (16 hex digits) of the fields that determine the trained result: model, dataset, lora, training
        (not checkpointing, output, storage, evaluation or tracking: they do not change the weights).

        Recorded with the run's identity in checkpoint manifests, the summary and the adapter, so that a
        checkpoint or an adapter can be traced to the settings that made it.
        """
        wire = self.to_wire()
        determining = {key: wire.get(key) for key in ("model", "dataset", "lora", "training")}
        training = dict(determining["training"] or {})
        # How the run is computed is not what it computes: the performance fields are left out, and the
        # fields that became optional hash as their former defaults, so earlier runs keep their hashes.
        for key in (*PERFORMANCE_ONLY_FIELDS, *TRACKING_FIELDS):
            training.pop(key, None)
        training.setdefault("batchSize", 4)
        if "warmupSteps" not in training:
            training.setdefault("warmupRatio", DEFAULT_WARMUP_RATIO)
        lora = dict(determining["lora"] or {})
        for key, default in (("rslora", False), ("init", "default")):
            if lora.get(key) == default:
                lora.pop(key)  # added later at their defaults: earlier runs keep their hashes
        determining["lora"] = lora
        training.setdefault("gradientCheckpointing", True)
        if training.get("nodes") == 1:
            training.pop("nodes")  # added later: single-pod runs keep their former hash
        if training.get("numProcesses") == "auto":
            training["numProcesses"] = 1  # the former default (the operator hands the trainer a number)
        determining["training"] = training
        text = json.dumps(determining, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def trainer_fields(cls) -> tuple[str, ...]:
        """The wire (camelCase) names of this model's top-level fields."""
        return tuple(f.alias or name for name, f in cls.model_fields.items())

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainerConfig":
        return cls.model_validate(json.loads(Path(path).read_text()))
