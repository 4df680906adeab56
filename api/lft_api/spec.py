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
from typing import Annotated, Literal, Optional

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


DatasetFormat = Literal["auto", "messages", "prompt-completion", "text"]
MAX_MIXTURE_SOURCES = 16
# What a dataset URI is, for dataset.uri and every dataset.mixture[].uri alike (one definition: a check added here
# applies to both).
DatasetUri = Annotated[str, Field(min_length=1)]
DATASET_URI_DOC = (
    "JSON Lines / JSON / Parquet file or directory as a URI or path (s3://bucket/train.jsonl, "
    "file:///data/train.jsonl, /data/train.parquet), or a Hugging Face dataset id."
)


class MixtureSource(SpecModel):
    """One source of dataset.mixture: read, column-mapped and checked on its own, then sampled by its weight."""

    uri: DatasetUri = Field(description=DATASET_URI_DOC)
    weight: float = Field(
        gt=0, allow_inf_nan=False,
        description=(
            "Relative weight: this source's share of the training examples is weight / (sum of the weights), "
            "e.g. 3 and 1 give 75% and 25%."
        ),
    )
    format: Optional[DatasetFormat] = Field(default=None, description="Row format of this source. Unset: dataset.format.")
    columns: Optional[ColumnsSpec] = Field(
        default=None, description="Column and key names of this source's rows. Unset: dataset.columns."
    )
    config: Optional[str] = Field(
        default=None, min_length=1, description="Configuration of a Hugging Face dataset id. Unset: dataset.config."
    )
    revision: Optional[str] = Field(
        default=None, min_length=1, description="Revision of a Hugging Face dataset id. Unset: dataset.revision."
    )


_DATASET_RULES: CelRules = [
    {"rule": "has(self.uri) != has(self.mixture)",
     "message": "dataset.uri and dataset.mixture are exclusive: set exactly one", "fieldPath": ".mixture"},
]


class DatasetSpec(SpecModel):
    """The chat-instruction dataset: one source (uri) or several sampled by weight (mixture)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _DATASET_RULES})

    uri: Optional[DatasetUri] = Field(default=None, description=DATASET_URI_DOC + " Exclusive with mixture.")
    mixture: Optional[list[MixtureSource]] = Field(
        default=None, min_length=1, max_length=MAX_MIXTURE_SOURCES,
        description=(
            "Several sources instead of uri (1 to 16): {uri, weight, format?, columns?, config?, revision?}; what "
            "a source leaves unset is the dataset's own (format, columns, config, revision; the splits, "
            "evalFraction and maxSamples are always the dataset's). Pre-flight reads and checks every source on "
            "its own (an error names dataset.mixture[i], from 0, its uri and the row). evalFraction is held out of "
            "each source (evalSplit: each source's eval split), then the training set is drawn from what is left: "
            "as many examples as the sources have rows together (at most maxSamples), each source's share "
            "weight / (sum of the weights) of them, a source with fewer rows than its share repeated (every row as "
            "often, give or take one), one with more sampled without repetition, and the whole shuffled, all "
            "with training.seed: every process, node and resumed attempt trains on the same examples in the same "
            "order. The summary records per source its rows, rows held out, examples used and weight."
        ),
    )
    format: DatasetFormat = Field(
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
        default=None, ge=1,
        description="Use at most this many training rows (after shuffling with the seed); with mixture: examples.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> "DatasetSpec":
        if self.uri is None and self.mixture is None:
            raise ValueError("dataset.uri or dataset.mixture is required: set exactly one")
        if self.uri is not None and self.mixture is not None:
            raise ValueError("dataset.uri and dataset.mixture are exclusive: set exactly one")
        return self

    def sources(self) -> list["DatasetSpec"]:
        """Each source as a single-source spec: this one (uri), or each mixture item completed by the dataset's
        format, columns, config and revision, with the dataset's splits and evalFraction (no maxSamples: it
        bounds the mixture)."""
        if self.mixture is None:
            return [self]
        return [self.model_copy(update={
            "uri": s.uri, "mixture": None, "max_samples": None,
            "format": s.format or self.format, "columns": s.columns if s.columns is not None else self.columns,
            "config": s.config or self.config, "revision": s.revision or self.revision,
        }) for s in self.mixture]


# lora.init values that move part of the base weights into the adapter: the published adapter is converted.
CONVERTED_INITS = ("pissa", "olora")
_LORA_RULES: CelRules = [
    {"rule": "!(self.init in ['pissa', 'olora']) || (self.quantization == 'none' && !self.useDora)",
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
