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


class ColumnsSpec(SpecModel):
    """Where a row's fields are, when the dataset names them differently (read before the format is detected)."""

    preset: Optional[Literal["sharegpt", "alpaca"]] = Field(
        default=None,
        description=(
            "A documented mapping, completed by the fields set next to it. sharegpt: messages from conversations, "
            "roleKey from, contentKey value, roles human->user, gpt->assistant (and system, tool). alpaca: "
            "prompt from [instruction, input] (joined by a blank line, empty parts left out), completion from output."
        ),
    )
    messages: Optional[str] = Field(default=None, min_length=1, description="The column holding the message list.")
    prompt: Optional[list[str]] = Field(
        default=None, min_length=1,
        description="The column(s) holding the prompt; several string columns are joined by a blank line.",
    )
    completion: Optional[str] = Field(default=None, min_length=1, description="The column holding the completion.")
    text: Optional[str] = Field(default=None, min_length=1, description="The column holding the text.")
    tools: Optional[str] = Field(default=None, min_length=1, description="The column holding the tool schemas.")
    role_key: Optional[str] = Field(default=None, min_length=1, description="The message key of the role (role).")
    content_key: Optional[str] = Field(
        default=None, min_length=1, description="The message key of the content (content)."
    )
    roles: dict[str, str] = Field(
        default_factory=dict,
        description="Role names to rename, e.g. {human: user, gpt: assistant}; other roles are kept as they are.",
    )


class DatasetSpec(SpecModel):
    """The chat-instruction dataset."""

    uri: str = Field(
        min_length=1,
        description=(
            "JSON Lines / JSON / Parquet file or directory as a URI or path (s3://bucket/train.jsonl, "
            "file:///data/train.jsonl, /data/train.parquet), or a Hugging Face dataset id."
        ),
    )
    format: Literal["auto", "messages", "prompt-completion", "text"] = Field(
        default="auto",
        description=(
            "Row format. messages: {messages: [{role, content, tool_calls?}, ...], tools?}; prompt-completion: "
            "{prompt, completion} as strings or as message lists; text: {text}. auto: detected per row from its keys."
        ),
    )
    columns: Optional[ColumnsSpec] = Field(
        default=None, description="Column and key names when the rows use other names (ShareGPT, Alpaca...)."
    )
    config: Optional[str] = Field(
        default=None, min_length=1, description="Configuration (subset) name of a Hugging Face dataset id."
    )
    revision: Optional[str] = Field(
        default=None, min_length=1, description="Git revision (branch, tag or commit) of a Hugging Face dataset id."
    )
    train_split: str = Field(default="train", description="Split used for training.")
    eval_split: Optional[str] = Field(
        default=None, description="Split used for evaluation; when unset, evalFraction of the train split is held out."
    )
    eval_fraction: float = Field(
        default=0.05, ge=0.0, lt=0.5, description="Fraction of the train split held out for evaluation (0 disables)."
    )
    max_samples: Optional[int] = Field(
        default=None, ge=1, description="Use at most this many training rows (after shuffling with the seed)."
    )


class LoraSpec(SpecModel):
    """LoRA adapter settings (defaults: the Phi-3 cookbook recipe)."""

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
    init: Literal["default", "gaussian"] = Field(
        default="default",
        description=(
            "Initialisation of the LoRA matrices (PEFT init_lora_weights). default: A Kaiming-uniform, B zero "
            "(PEFT's True); gaussian: A Gaussian scaled by the rank, B zero. Not offered: pissa, olora and loftq, "
            "which rewrite the base model's weights, so that the adapter alone no longer fits the published base "
            "model (it would need PEFT's conversion to a rank-2r adapter), and loftq also quantizes the base."
        ),
    )


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
