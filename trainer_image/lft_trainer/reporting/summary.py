"""training_summary.json: what a finished run did, built from plain facts by a pure function."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from lft_api.contract import FileDigest, RunIdentity
from lft_api.spec import TrainerConfig

from ..storage.checkpoints import RUN_IDENTITY_KEY
from .history import perplexity


@dataclass
class Timer:
    started: float = field(default_factory=time.monotonic)
    marks: dict[str, float] = field(default_factory=dict)
    _last: float = field(default_factory=time.monotonic)

    def mark(self, name: str) -> None:
        now = time.monotonic()
        self.marks[name] = round(now - self._last, 3)
        self._last = now

    def total(self) -> float:
        return round(time.monotonic() - self.started, 3)


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "tokenizers", "s3fs", "fsspec"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


# What the summary's `resolved` block reports of the SFTConfig and LoraConfig the run used (every field the spec
# sets or can set, with TRL's, transformers' and PEFT's defaults filled in).
RESOLVED_SFT_KEYS = (
    "learning_rate", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "optim", "max_grad_norm",
    "weight_decay", "neftune_noise_alpha", "per_device_train_batch_size", "gradient_accumulation_steps",
    "num_train_epochs", "max_steps", "max_length", "packing", "seed", "gradient_checkpointing", "bf16", "fp16",
    "eval_strategy", "eval_steps", "save_steps", "logging_steps",
)
RESOLVED_LORA_KEYS = ("r", "lora_alpha", "lora_dropout", "target_modules", "bias", "use_dora", "use_rslora",
                      "init_lora_weights", "task_type")


def _plain(value: Any) -> Any:
    """A JSON value: enums by value, sets sorted, tuples as lists, anything else unknown as its str."""
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def resolved_config(sft_config: Any, lora_config: Any, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """The summary's `resolved` block: the values of the SFTConfig (TrainingArguments) and the PEFT LoraConfig
    that the run trained with, read from the objects themselves; `extra`: training.extra's keys (and
    training.earlyStopping's), each under the config that has it."""
    sft_keys = RESOLVED_SFT_KEYS + tuple(k for k in extra if k not in RESOLVED_SFT_KEYS and hasattr(sft_config, k))
    lora_keys = RESOLVED_LORA_KEYS + tuple(k for k in extra if k not in RESOLVED_LORA_KEYS and hasattr(lora_config, k)
                                           and not hasattr(sft_config, k))
    return {"sftConfig": {k: _plain(getattr(sft_config, k, None)) for k in sft_keys},
            "loraConfig": {k: _plain(getattr(lora_config, k, None)) for k in lora_keys}}


@dataclass
class RunFacts:
    """Everything the summary reports, gathered by train.publish."""

    identity: RunIdentity
    adapter_uri: str
    files: list[FileDigest]
    steps: int
    total_steps: int
    epochs: float | None
    tokens_seen: int
    log_history: list[dict]
    train_rows: int
    eval_rows: int
    dataset: dict[str, Any]
    trainable_parameters: int
    total_parameters: int
    device: str
    dtype: str
    num_processes: int  # the world size (every process of every pod)
    nodes: int = 1
    processes_per_node: int = 1
    merged_uri: str | None = None
    oci: dict[str, Any] | None = None  # output.push.oci: {reference, digest} or {reference, error}
    eval_loss_before: float | None = None
    eval_loss_after: float | None = None
    train_runtime: float | None = None
    tokens_per_second: float | None = None
    resumed_from_step: int | None = None
    resumed_from_uri: str | None = None
    resumed_from_run: RunIdentity | None = None  # output.resumeFrom: the run that wrote that checkpoint
    replaced_runs: list[RunIdentity] = field(default_factory=list)  # output.overwrite deleted their artifacts
    durations: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    performance: dict[str, Any] | None = None  # status.performance at the end: plan, estimate, throughput
    servability: dict[str, Any] | None = None  # contract.Servability: can vLLM serve the adapter, and if not, why
    how_to_load: str | None = None  # a Python snippet that loads the adapter onto its base
    artifacts: dict[str, str] = field(default_factory=dict)  # contract.Artifacts: the files under the output
    loss_plot_skipped: str | None = None  # why loss.png was not drawn (e.g. matplotlib is not installed)
    samples: dict[str, Any] | None = None  # samples.py: held-out prompts, base and tuned completions
    data_shards: dict[str, Any] | None = None  # shards.summarize: rows per rank, rows on several ranks
    resolved: dict[str, Any] | None = None  # resolved_config: the SFTConfig and LoraConfig values the run used
    stopped_early: dict[str, Any] | None = None  # contract.EarlyStop: training.earlyStopping ended training early


def last_train_loss(history: list[dict]) -> float | None:
    for entry in reversed(history):
        if "loss" in entry:
            return float(entry["loss"])
    return None


def build_summary(config: TrainerConfig, facts: RunFacts) -> dict[str, Any]:
    """The content of training_summary.json. Pure."""
    before, after = facts.eval_loss_before, facts.eval_loss_after
    return {
        "config": config.to_wire(),
        RUN_IDENTITY_KEY: facts.identity.to_wire(),
        "outcome": "succeeded",
        "adapterUri": facts.adapter_uri,
        "mergedUri": facts.merged_uri,
        **({"oci": facts.oci} if facts.oci is not None else {}),
        "servability": facts.servability,
        "howToLoad": facts.how_to_load,
        "artifacts": facts.artifacts,
        **({"lossPlotSkipped": facts.loss_plot_skipped} if facts.loss_plot_skipped else {}),
        "metrics": {"trainLoss": last_train_loss(facts.log_history), "evalLossBefore": before, "evalLossAfter": after,
                    "evalLossImprovement": before - after if before is not None and after is not None else None,
                    "perplexityAfter": perplexity(after),
                    "trainRuntimeSeconds": facts.train_runtime, "trainTokensPerSecond": facts.tokens_per_second},
        **({"samples": facts.samples} if facts.samples is not None else {}),
        "steps": facts.steps,
        "totalSteps": facts.total_steps,
        # training.earlyStopping: {step, totalSteps, bestEvalLoss, bestStep, patience, threshold}; null: ran to the end
        "stoppedEarly": facts.stopped_early,
        "epochs": facts.epochs,
        "resumedFromStep": facts.resumed_from_step,
        "resumedFrom": ({"uri": facts.resumed_from_uri,
                         "run": facts.resumed_from_run.to_wire() if facts.resumed_from_run else None}
                        if facts.resumed_from_uri else None),
        "replacedRuns": [r.to_wire() for r in facts.replaced_runs],
        "tokensSeen": facts.tokens_seen,
        "trainRows": facts.train_rows,
        "evalRows": facts.eval_rows,
        "dataset": facts.dataset,
        "trainableParameters": facts.trainable_parameters,
        "totalParameters": facts.total_parameters,
        "device": facts.device,
        "dtype": facts.dtype,
        "numProcesses": facts.num_processes,
        "nodes": facts.nodes,
        "processesPerNode": facts.processes_per_node,
        "worldSize": facts.num_processes,
        "dataShards": facts.data_shards,
        "performance": facts.performance,
        "resolved": facts.resolved,
        "durationsSeconds": facts.durations,
        "libraryVersions": facts.versions,
        "files": [f.to_wire() for f in facts.files],
        "logHistory": facts.log_history[-50:],
    }
