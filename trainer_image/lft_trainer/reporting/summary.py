"""training_summary.json: what a finished run did, built from plain facts by a pure function."""

from __future__ import annotations

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
        "durationsSeconds": facts.durations,
        "libraryVersions": facts.versions,
        "files": [f.to_wire() for f in facts.files],
        "logHistory": facts.log_history[-50:],
    }
