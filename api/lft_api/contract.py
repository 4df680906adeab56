"""The contract between the operator and the trainer pod, named in one place.

- Exit codes tell the operator what to do with a finished trainer container.
- The termination message (/dev/termination-log, JSON, < 4 KiB) carries the result or the reason.
- Environment variables carry the config path and the resource's identity.
- The trainer patches only `status.progress`, `status.metrics`, `status.latestCheckpoint`,
  `status.checkpointHealth`, `status.performance` and `status.artifacts`, with `status.trainerUid` (its
  LFT_UID); the operator owns every other status field and reverts anyone else's writes of them.

Pure data and pure functions: imported by both images (the operator's has no torch).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import IntEnum
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

API_GROUP = "finetune.dev"
API_VERSION = "v1alpha1"
KIND = "LoRAFineTune"
PLURAL = "lorafinetunes"


class ExitCode(IntEnum):
    SUCCEEDED = 0
    # Something went wrong that a retry may fix (OOM, storage outage beyond retries, a bug).
    ERROR = 1
    # The input is wrong (config, dataset row, missing model, missing credentials): retrying
    # cannot help, the operator fails the resource at once.
    INVALID_INPUT = 3
    # SIGTERM (pod deleted, node preempted, suspend): a checkpoint was saved; start again to resume.
    PREEMPTED = 4


# Environment variables the operator sets on the trainer container.
ENV_CONFIG_PATH = "LFT_CONFIG"  # path of the mounted trainer config JSON
ENV_RESOURCE_NAME = "LFT_NAME"
ENV_RESOURCE_NAMESPACE = "LFT_NAMESPACE"
ENV_RESOURCE_UID = "LFT_UID"
ENV_TERMINATION_LOG = "LFT_TERMINATION_LOG"  # default /dev/termination-log
ENV_STATUS_MIN_INTERVAL = "LFT_STATUS_MIN_INTERVAL_SECONDS"  # rate limit of status patches, default 5
# Directories (":"-separated) holding the Secrets the pod receives, mounted for the trainer to mask every
# value of them in its output (lft_trainer.scrubbing); the operator sets it.
ENV_SECRET_DIRS = "LFT_SECRET_DIRS"
SECRET_VALUES_DIR = "/var/run/lft/secret-values"

# Field managers (the API server's managedFields) of the status writes: the operator tells its own
# writes of the fields it owns from anyone else's by them (operator/lft_operator/status/trust.py).
OPERATOR_FIELD_MANAGER = "lft-operator"
TRAINER_FIELD_MANAGER = "lft-trainer"

# Multi-node runs (training.nodes > 1): set by the operator on each pod; torchrun's static rendezvous.
ENV_NODE_RANK = "LFT_NODE_RANK"  # this pod's node rank, 0..nodes-1 (fixed per Job)
ENV_MASTER_ADDR = "LFT_MASTER_ADDR"  # the stable DNS name of the node-rank-0 pod
ENV_MASTER_PORT = "LFT_MASTER_PORT"
DEFAULT_MASTER_PORT = 29500

DEFAULT_CONFIG_PATH = "/etc/lft/config.json"
# Next to the config in the ConfigMap: the UID of the LoRAFineTune it was written for. The trainer refuses a
# config written for another UID (an earlier namesake's ConfigMap still there), rather than train on it.
CONFIG_OWNER_FILE = "owner-uid"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
TERMINATION_MESSAGE_MAX_BYTES = 4096

# Layout under the output URI.
ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_MANIFEST = "manifest.json"  # written last: a checkpoint without it is incomplete
SUMMARY_FILE = "training_summary.json"
METRICS_FILE = "metrics.jsonl"  # every logged step; refreshed at each checkpoint and at the end
LOSS_PLOT_FILE = "loss.png"  # train and eval loss against steps; refreshed with metrics.jsonl
SAMPLES_FILE = "samples.jsonl"  # held-out prompts: reference, base and tuned completions (evaluation.samples)
TENSORBOARD_DIR = "tensorboard"  # training.reportTo tensorboard: event files, uploaded at checkpoints and the end
WANDB_DIR = "wandb"  # training.wandb.mode offline: the W&B run directories (`wandb sync` uploads them later)


class WireModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class FileDigest(WireModel):
    name: str
    size: int
    sha256: str


class Progress(WireModel):
    """status.progress, patched by the trainer."""

    step: int
    total_steps: int
    epoch: Optional[float] = None
    percent: Optional[float] = None
    eta_seconds: Optional[int] = None
    tokens_per_second: Optional[float] = None
    resumed_from_step: Optional[int] = None
    updated_at: Optional[str] = None
    # Pre-formatted for `kubectl get` printer columns (JSONPath cannot format): "120/300 (40%)", "3m20s".
    display: Optional[str] = None
    eta: Optional[str] = None

    @classmethod
    def build(cls, step: int, total_steps: int, **fields: Any) -> "Progress":
        """A Progress with percent and the display strings derived from step/total and etaSeconds."""
        percent = round(100.0 * step / total_steps, 1) if total_steps > 0 else None
        eta_seconds = fields.get("eta_seconds")
        return cls(
            step=step,
            total_steps=total_steps,
            percent=percent,
            display=f"{step}/{total_steps} ({percent:.0f}%)" if percent is not None else f"{step}/?",
            eta=format_duration(eta_seconds) if eta_seconds is not None else None,
            **fields,
        )


def format_duration(seconds: float) -> str:
    """Compact human duration: 45s, 3m20s, 2h05m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


class Metrics(WireModel):
    """status.metrics, patched by the trainer."""

    loss: Optional[float] = None
    eval_loss: Optional[float] = None
    eval_loss_before: Optional[float] = None
    learning_rate: Optional[float] = None
    grad_norm: Optional[float] = None
    perplexity: Optional[float] = Field(default=None, description="exp(evalLoss) at the end; None on overflow.")
    eval_loss_change: Optional[float] = Field(
        default=None, description="evalLoss - evalLossBefore at the end: negative when the fine-tune helped."
    )

    @field_validator("loss", "eval_loss", "eval_loss_before", "grad_norm", "perplexity", "eval_loss_change")
    @classmethod
    def _four_decimals(cls, v: Optional[float]) -> Optional[float]:
        # `kubectl get` prints numbers as stored: 1.5059, not 1.505924129486084.
        return None if v is None else round(float(v), 4)


class CheckpointRef(WireModel):
    """status.latestCheckpoint."""

    step: int
    uri: str


class OciArtifactRef(WireModel):
    """Where output.push.oci pushed the adapter: the tag pushed and the manifest's digest."""

    reference: str = Field(description="repository:tag as pushed, e.g. registry.example.com/team/adapter:run-1.")
    digest: str = Field(description="sha256 of the manifest: pull repository@digest for exactly this adapter.")

    def pinned(self) -> str:
        """repository@digest."""
        return f"{self.reference.rsplit(':', 1)[0]}@{self.digest}"


class AdapterRef(WireModel):
    """status.adapter, set by the operator from the termination message."""

    uri: str
    files: list[FileDigest] = Field(default_factory=list)
    oci: Optional[OciArtifactRef] = Field(default=None, description="The OCI artifact, with output.push.oci.")


class RunIdentity(WireModel):
    """Which run wrote an artifact: recorded in checkpoint manifests, training_summary.json and the adapter.

    A run resumes only from checkpoints of its own identity (or from spec.output.resumeFrom), and an output
    prefix holding another identity's artifacts is refused unless spec.output.overwrite is set.
    """

    namespace: Optional[str] = None
    name: Optional[str] = None
    uid: Optional[str] = Field(default=None, description="metadata.uid of the LoRAFineTune; None outside Kubernetes.")
    spec_hash: str = Field(description="TrainerConfig.result_hash(): model, dataset, lora and training settings.")

    def same_run(self, other: "RunIdentity") -> bool:
        """The same LoRAFineTune (by UID); without UIDs (runs outside Kubernetes), the same settings."""
        if self.uid or other.uid:
            return self.uid == other.uid
        return self.spec_hash == other.spec_hash

    def describe(self) -> str:
        if self.name:
            return f"LoRAFineTune {self.namespace}/{self.name} (uid {self.uid})"
        return f"a run outside Kubernetes (settings {self.spec_hash})"


class CheckpointHealth(WireModel):
    """status.checkpointHealth, patched by the trainer: are checkpoint uploads succeeding?

    The operator turns it into the CheckpointsHealthy condition and a Warning Event while uploads fail.
    """

    healthy: bool
    message: Optional[str] = Field(default=None, description="The last storage error (credentials scrubbed).")
    failed_uploads: int = Field(default=0, description="Checkpoint uploads failed in a row.")
    last_uploaded_step: Optional[int] = Field(default=None, description="Step of the newest uploaded checkpoint.")
    updated_at: Optional[str] = None


class Performance(WireModel):
    """status.performance, patched by the trainer: how the run is computed (the plan of training.performance,
    with the reason for each choice), the memory estimate and the throughput measured against the hardware."""

    gpu: Optional[str] = Field(default=None, description="Device name; None on CPU.")
    gpu_memory_gib: Optional[float] = Field(default=None, alias="gpuMemoryGiB", description="Total memory of one GPU.")
    estimated_peak_memory_gib: Optional[float] = Field(
        default=None, alias="estimatedPeakMemoryGiB",
        description="Estimated peak GPU memory of one process for the plan, before loading.",
    )
    peak_memory_gib: Optional[float] = Field(
        default=None, alias="peakMemoryGiB", description="Measured peak GPU memory (reserved by torch)."
    )
    micro_batch_size: Optional[int] = None
    gradient_accumulation_steps: Optional[int] = None
    gradient_checkpointing: Optional[bool] = None
    fused_kernels: Optional[bool] = None
    attention: Optional[str] = Field(default=None, description="Attention kernel, e.g. sdpa or varlen.")
    batching: Optional[str] = Field(
        default=None, description="padded, length-grouped, or padding-free (packed rows without padding)."
    )
    compiled: Optional[bool] = None
    oom_backoffs: int = Field(default=0, description="Times the micro-batch was halved after running out of memory.")
    choices: list[str] = Field(default_factory=list, description="Why each setting was chosen.")
    flops_per_token: Optional[float] = Field(
        default=None, description="Model FLOPs per trained token (see docs/performance.md).")
    tokens_per_second: Optional[float] = None
    tflops: Optional[float] = Field(default=None, description="Achieved model TFLOP/s.")
    mfu_percent: Optional[float] = Field(
        default=None, description="Model FLOPs utilisation: achieved / the GPU's dense bf16 peak; None when unknown."
    )


class Artifacts(WireModel):
    """status.artifacts, patched by the trainer as each is first written: where the run's files are."""

    adapter: Optional[str] = Field(default=None, description="The adapter directory.")
    merged: Optional[str] = Field(default=None, description="The merged model (output.mergeAdapter).")
    summary: Optional[str] = Field(default=None, description="training_summary.json.")
    metrics: Optional[str] = Field(
        default=None, description="metrics.jsonl: one JSON row per logged step (refreshed at each checkpoint)."
    )
    loss_plot: Optional[str] = Field(default=None, description="loss.png: train and eval loss against steps.")
    samples: Optional[str] = Field(
        default=None, description="samples.jsonl: held-out prompts with the reference, base and tuned completions."
    )
    tensorboard: Optional[str] = Field(default=None, description="TensorBoard event files (reportTo tensorboard).")
    mlflow_run: Optional[str] = Field(default=None, description="The MLflow run's page (reportTo mlflow).")
    wandb: Optional[str] = Field(
        default=None, description="The W&B run's page (online), or its offline run files (mode offline)."
    )

    def merged_with(self, other: "Artifacts") -> "Artifacts":
        """These artifacts with other's URIs added (other wins where both have one)."""
        return Artifacts.model_validate({**self.model_dump(exclude_none=True), **other.model_dump(exclude_none=True)})


class Servability(WireModel):
    """Whether a serving engine can load the adapter as it is, and if not, why (the trainer's check of the
    saved adapter_config.json; in training_summary.json, the termination message and an Event)."""

    engine: str = Field(default="vLLM", description="The engine checked against.")
    servable: bool
    reasons: list[str] = Field(default_factory=list, description="Why not; empty when servable.")
    notes: list[str] = Field(default_factory=list, description="What serving needs, e.g. --max-lora-rank 64.")

    def describe(self) -> str:
        if self.servable:
            return f"{self.engine} can serve the adapter" + (f": {'; '.join(self.notes)}" if self.notes else ".")
        return f"{self.engine} cannot serve the adapter: {'; '.join(self.reasons)}"


class ModelRegistration(WireModel):
    """training.mlflow.registeredModelName: the MLflow model version made from the adapter, or why none was."""

    name: str = Field(description="The registered model.")
    source: Optional[str] = Field(default=None, description="runs:/<run id>/adapter: the run's copy of the adapter.")
    version: Optional[str] = Field(default=None, description="The new version; unset when registration failed.")
    error: Optional[str] = Field(default=None, description="Why registration failed (the run still succeeded).")

    def describe(self) -> str:
        if self.error is None:
            return f"The adapter is version {self.version} of the MLflow registered model {self.name} ({self.source})."
        return f"The adapter was not registered as MLflow model {self.name}: {self.error}"


class EarlyStop(WireModel):
    """training.earlyStopping ended the run before its last step (the summary's stoppedEarly)."""

    step: int
    total_steps: int
    best_eval_loss: Optional[float] = None
    best_step: Optional[int] = None
    patience: int
    threshold: float = 0.0

    def describe(self) -> str:
        best = f"{self.best_eval_loss:.4f}" if self.best_eval_loss is not None else "n/a"
        by = f" by more than {self.threshold:g}" if self.threshold else ""
        return (f"stopped early at step {self.step} of {self.total_steps}: {self.patience} evaluation(s) in a row "
                f"without the eval loss improving{by} (best {best} at step {self.best_step})")


Outcome = Literal["succeeded", "invalid_input", "preempted", "error"]


class TerminationMessage(WireModel):
    """What the trainer writes to its termination log; the operator parses it back."""

    outcome: Outcome
    reason: str = Field(description="CamelCase machine-readable reason, e.g. InvalidDataset, Completed.")
    message: str = ""
    adapter: Optional[AdapterRef] = None
    metrics: Optional[Metrics] = None
    step: Optional[int] = None
    total_steps: Optional[int] = None
    resumed_from_step: Optional[int] = None
    servability: Optional[Servability] = None
    model_registration: Optional[ModelRegistration] = None
    stopped_early: Optional[EarlyStop] = None

    def encode(self) -> str:
        """JSON of at most TERMINATION_MESSAGE_MAX_BYTES bytes (the kubelet's limit), always valid JSON.

        To fit, the message is shortened first, then the adapter's file list; the adapter URI is kept.
        Slicing the encoded text instead could cut the JSON or a UTF-8 character in two.
        """
        data = self.to_wire()
        if _fits(data):
            return _dump(data)
        message = data.get("message", "")
        data["message"] = _truncated(message, 0)
        adapter = data.get("adapter")
        if adapter and adapter.get("files") and not _fits(data):
            files = adapter["files"]
            adapter["files"] = files[:_largest_fitting(len(files), lambda n: {**adapter, "files": files[:n]},
                                                       data, "adapter")]
        if message:
            keep = _largest_fitting(len(message), lambda n: _truncated(message, n), data, "message")
            data["message"] = _truncated(message, keep)
        if not _fits(data):  # only a huge URI or reason is left: keep what the operator needs most
            data = {k: data[k] for k in ("outcome", "reason", "adapter", "step") if k in data}
            data["message"] = "result too large for the termination message"
            if adapter:
                data["adapter"] = {"uri": adapter["uri"], "files": []}
            if not _fits(data):
                data.pop("adapter", None)
                data["reason"] = data["reason"][:200]
                data["message"] = "adapter URI too long for the termination message: see training_summary.json"
        return _dump(data)

    @classmethod
    def decode(cls, text: Optional[str]) -> Optional["TerminationMessage"]:
        """Parse a termination message; None for empty or foreign text (e.g. a crash's stack trace)."""
        if not text or not text.strip().startswith("{"):
            return None
        try:
            return cls.model_validate(json.loads(text))
        except (ValueError, TypeError):
            return None


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


def _fits(data: dict[str, Any]) -> bool:
    return len(_dump(data).encode()) <= TERMINATION_MESSAGE_MAX_BYTES


def _truncated(text: str, keep: int) -> str:
    return text if keep >= len(text) else text[:keep] + " [truncated]"


def _largest_fitting(upper: int, value_for: Callable[[int], object], data: dict[str, Any], key: str) -> int:
    """The largest n in [0, upper] for which data with data[key] = value_for(n) fits (0 when none does)."""
    lo, hi = 0, upper
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _fits({**data, key: value_for(mid)}):
            lo = mid
        else:
            hi = mid - 1
    return lo


# The one mapping between a run's outcome and the trainer's exit code: the trainer exits with exit_code_for(outcome),
# the operator reads the outcome back from the exit code (a code not listed, e.g. a crash's, is an error).
EXIT_CODES: dict[Outcome, ExitCode] = {
    "succeeded": ExitCode.SUCCEEDED,
    "invalid_input": ExitCode.INVALID_INPUT,
    "preempted": ExitCode.PREEMPTED,
    "error": ExitCode.ERROR,
}


def exit_code_for(outcome: Outcome) -> ExitCode:
    return EXIT_CODES.get(outcome, ExitCode.ERROR)


def outcome_for_exit_code(code: Optional[int]) -> Outcome:
    for outcome, exit_code in EXIT_CODES.items():
        if code == exit_code:
            return outcome
    return "error"


def status_patch(
    progress: Optional[Progress] = None,
    metrics: Optional[Metrics] = None,
    latest_checkpoint: Optional[CheckpointRef] = None,
    checkpoint_health: Optional[CheckpointHealth] = None,
    performance: Optional[Performance] = None,
    artifacts: Optional[Artifacts] = None,
) -> dict[str, Any]:
    """The merge-patch body the trainer sends to the resource's status subresource (the status client
    adds status.trainerUid)."""
    status: dict[str, Any] = {}
    if progress is not None:
        status["progress"] = progress.to_wire()
    if metrics is not None:
        status["metrics"] = metrics.to_wire()
    if latest_checkpoint is not None:
        status["latestCheckpoint"] = latest_checkpoint.to_wire()
    if checkpoint_health is not None:
        status["checkpointHealth"] = checkpoint_health.to_wire()
    if performance is not None:
        status["performance"] = performance.to_wire()
    if artifacts is not None:
        status["artifacts"] = artifacts.to_wire()
    return {"status": status}
