"""One training run, top to bottom: prepare (pre-flight, resume point, load), fit (eval before, train or
finish from a checkpoint), publish (adapter, merge, history, summary); the result for the operator.

`run(config)` returns a TerminationMessage; __main__ turns it into the exit code. Under DDP every
rank calls run(); only rank 0 checks storage, reports progress, uploads and writes the result.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lft_api import contract
from lft_api.conditions import Reason
from lft_api.contract import AdapterRef, Artifacts, Metrics, OciArtifactRef, RunIdentity, TerminationMessage
from lft_api.spec import TrainerConfig

from ..adapter.adapter_card import finish_adapter
from ..adapter.samples import write_samples
from ..data import shards, trainset
from ..errors import InvalidInput, StorageError
from ..model import adapters, conversion, extra_settings
from ..model import loading as model
from ..performance import plan as performance
from ..performance import probes, sizing
from ..performance.throughput import ThroughputMeter, make_throughput_callback
from ..reporting import tracking
from ..reporting.artifacts import HistoryWriter
from ..reporting.progress import Reporter, StdoutSink, make_callback
from ..reporting.summary import RunFacts, Timer, build_summary, last_train_loss, library_versions, resolved_config
from ..settings import Settings
from ..storage import oci
from ..storage.ownership import ADAPTER_IDENTITY_FILE, run_identity
from ..storage.store import Storage
from ..storage.uploader import CheckpointUploader
from . import early_stop, preflight
from .control import RUN_STATE_FILE, make_control_callback, recording_trainer
from .distributed import Preemption, is_main, local_world_size, world_size
from .resume import ResumePoint, find_resume_point
from .sft_args import sft_kwargs

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
@dataclass
class Prepared:
    """What prepare() established: checked inputs, where to resume from, the loaded model and data."""

    config: TrainerConfig
    work: Path
    cuda: bool
    dtype_name: str
    identity: RunIdentity
    checks: preflight.PreflightReport
    out: Storage
    resume: ResumePoint | None
    model_dir: str
    tokenizer: Any
    model: Any  # the PEFT model
    data: trainset.TrainData  # the rows and their tokens, as trained
    plan: performance.Plan
    hardware: performance.Hardware
    flops_per_token: float | None
    settings: Settings
    initial_adapter: Path | None = None  # lora.init pissa/olora (rank 0): the adapter before training


@dataclass(frozen=True)
class RunContext:
    """The run's collaborators, made once by run() and handed to each stage (make_trainer, fit, publish)."""

    reporter: Reporter
    preemption: Preemption
    timer: Timer
    uploader: CheckpointUploader | None  # rank 0 only
    history: HistoryWriter | None  # rank 0 only
    tracker: tracking.Tracker | None = None  # rank 0 only


@dataclass
class Fitted:
    state: Any  # the HF TrainerState at the end
    eval_before: float | None = None
    eval_after: float | None = None
    train_runtime: float | None = None
    preempted: TerminationMessage | None = None
    data_shards: dict[str, Any] | None = None  # which rows each rank trained on (shards.summarize)
    stopped_early: contract.EarlyStop | None = None  # training.earlyStopping ended training before its last step


def run(config: TrainerConfig, reporter: Reporter | None = None,
        preemption: Preemption | None = None, settings: Settings | None = None) -> TerminationMessage:
    timer = Timer()
    preemption = preemption or Preemption()
    reporter = reporter if reporter is not None else Reporter([StdoutSink()])
    prep = prepare(config, reporter, timer, settings or Settings.from_environ())
    uploader = (CheckpointUploader(prep.out, config.checkpointing.keep_last, identity=prep.identity,
                                   on_uploaded=reporter.checkpoint_uploaded, on_failed=reporter.checkpoint_failed)
                if is_main() else None)
    tracker = (tracking.Tracker(config, prep.work, prep.identity, prep.out, preemption.requested.is_set)
               if is_main() else None)
    history = (HistoryWriter(prep.out, prep.work / "history", prep.identity.name, reporter.artifacts_written,
                             also=tracker.sync if config.training.report_to else None) if is_main() else None)
    ctx = RunContext(reporter, preemption, timer, uploader, history, tracker)
    try:
        if tracker is not None:
            tracker.start(prep.resume.step if prep.resume else None)
        trainer, fitted = fit_within_memory(prep, ctx)
        if fitted.preempted is not None:
            return fitted.preempted
        fitted.data_shards = shards.summarize(shards.gather(trainer.shard_recorder))  # every rank: a collective
        if not is_main():
            return TerminationMessage(outcome="succeeded", reason=Reason.COMPLETED, step=fitted.state.global_step,
                                      total_steps=fitted.state.max_steps)
        return publish(prep, trainer, fitted, ctx)
    finally:
        if uploader is not None:
            uploader.close(timeout=600)
        if history is not None:
            history.close(timeout=60)
        if tracker is not None:
            tracker.close()


def prepare(config: TrainerConfig, reporter: Reporter, timer: Timer, settings: Settings) -> Prepared:
    import torch
    from transformers import set_seed

    work, cuda, identity = work_dir(settings), torch.cuda.is_available(), run_identity(config)
    tracking.apply_env(config, work, identity)
    checks = preflight.run_checks(config, work, cuda, identity, check_output=is_main(), settings=settings)
    log.info("pre-flight ok: %s", json.dumps(checks.dataset.summary()))
    timer.mark("preflight")
    out = Storage(config.output.uri, config.storage)
    resume = find_resume_point(config, out, identity, work / "resume", settings)
    reporter.resumed(resume.step if resume else None)
    timer.mark("resume_download")

    model_dir = model.model_dir(config, work)
    tokenizer = model.load_tokenizer(config, model_dir)
    train_data = trainset.build(config, checks.dataset, tokenizer, work, settings.rank)  # the chat template's checks
    log.info("dataset rendered: %s", json.dumps(train_data.summary(config.training.max_length)))
    timer.mark("tokenize")
    mean_tokens = train_data.mean_tokens
    dtype_name = model.resolve_dtype_name(config.model.dtype, cuda, cuda and torch.cuda.is_bf16_supported())
    plan, hw, flops = sizing.plan_performance(config, model_dir, mean_tokens, reporter, settings.gpu_memory_gib)
    set_seed(config.training.seed)
    if resume is not None:
        conversion.check_resume(config, resume.path, resume.uri)
    peft_model = model.with_lora(config, model.load_model(config, model_dir, cuda, dtype_name, plan,
                                                          settings.local_rank or 0), adapters.local_dir(config, work))
    # pissa/olora: the adapter as initialised, for the conversion of the published adapter (a resume re-runs
    # the same deterministic decomposition on the freshly loaded base: conversion.py)
    initial = conversion.save_initial(peft_model, work) if conversion.converts(config) and is_main() else None
    timer.mark("load")
    return Prepared(config, work, cuda, dtype_name, identity, checks, out, resume, model_dir, tokenizer,
                    peft_model, train_data, plan, hw, flops, settings, initial)


def make_trainer(prep: Prepared, ctx: RunContext):
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    local_ckpts = prep.work / "checkpoints"
    kwargs = sft_kwargs(prep.config, str(local_ckpts), prep.cuda, prep.dtype_name, prep.data.eval is not None,
                        prep.plan, prep.settings.ddp_timeout)
    args = extra_settings.build(SFTConfig, {**kwargs, "run_name": tracking.run_name(prep.identity)},
                                extra_settings.route(prep.config.training.extra).sft)
    control = make_control_callback(ctx.preemption, ctx.uploader, local_ckpts, ctx.history)
    peak = performance.peak_bf16_tflops(prep.hardware.gpu_name)
    meter = ThroughputMeter(prep.flops_per_token, peak * world_size() if peak else None)

    def measured(m: ThroughputMeter, peak_gib: float | None) -> None:
        ctx.reporter.throughput_measured(m.tokens_per_second, m.tflops, m.mfu_percent, peak_gib)

    # The meter first: its on_log updates the figures that the progress callback's log event carries.
    callbacks = [make_throughput_callback(meter, measured, prep.cuda), make_callback(ctx.reporter), control,
                 *early_stop.callbacks(prep.config.training.early_stopping, prep.data.eval is not None)]
    trainer = recording_trainer(SFTTrainer)(model=prep.model, args=args, train_dataset=prep.data.train,
                                            eval_dataset=prep.data.eval, processing_class=prep.tokenizer,
                                            callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # prints python dicts on stdout; our events are JSON lines
    ctx.reporter.planned(planned_steps(trainer))
    return trainer, control


def fit_within_memory(prep: Prepared, ctx: RunContext) -> tuple[Any, Fitted]:
    """fit(); when CUDA runs out of memory within this attempt's first OOM_RESTART_STEPS optimizer steps,
    performance auto starts the attempt again with the next smaller micro-batch of the same effective batch
    (Plan.halved), from the same weights; otherwise, or when that is used up, the run ends with reason
    OutOfMemory, the estimate and what to change."""
    initial = sizing.trainable_snapshot(prep.model)
    start_step = prep.resume.step if prep.resume else 0
    while True:
        trainer, control = make_trainer(prep, ctx)
        ctx.timer.mark("setup")
        try:
            return trainer, fit(prep, trainer, control, ctx)
        except Exception as exc:
            if not probes.is_out_of_memory(exc):
                raise
            error = str(exc).splitlines()[0][:300]
        # Outside the except block: the traceback's frames (and their tensors) are gone.
        steps_done = trainer.state.global_step - start_step
        sizing.release_memory(trainer)
        del trainer, control
        smaller = (prep.plan.halved() if steps_done <= performance.OOM_RESTART_STEPS and world_size() == 1
                   else None)
        if smaller is None:
            raise InvalidInput(Reason.OUT_OF_MEMORY, probes.out_of_memory_message(
                prep.plan, prep.hardware, error, steps_done), field="training.batchSize")
        log.warning("CUDA %s (after %d optimizer steps; starting the attempt again)", smaller.choices[-1], steps_done)
        sizing.restore_trainable(prep.model, initial, prep.config.training.seed)  # a resume also reloads its checkpoint
        prep.plan = smaller
        if is_main():
            ctx.reporter.performance_planned(probes.status_block(smaller, prep.hardware, prep.flops_per_token))


def fit(prep: Prepared, trainer, control, ctx: RunContext) -> Fitted:
    reporter, preemption, uploader, timer = ctx.reporter, ctx.preemption, ctx.uploader, ctx.timer
    resume = prep.resume
    resumed_from = resume.step if resume else None
    eval_before = None
    if resume is not None:
        eval_before = eval_before_from_checkpoint(resume.path)
        reporter.eval_before_restored(eval_before)
    elif prep.data.eval is not None and not preemption.requested.is_set():
        eval_before = trainer.evaluate()["eval_loss"]  # the callback reports it
    control.eval_loss_before = eval_before
    timer.mark("eval_before")
    if preemption.requested.is_set():
        return Fitted(trainer.state, preempted=_preempted(uploader, step=resumed_from or 0, resumed_from=resumed_from))
    train_runtime = _train_or_finish(trainer, resume, reporter.progress.total_steps, prep.config)
    timer.mark("train")
    state = trainer.state
    if control.preempted_at_step is not None:
        return Fitted(state, preempted=_preempted(uploader, step=state.global_step, resumed_from=resumed_from,
                                                  total_steps=state.max_steps))
    stopped = early_stop.outcome(prep.config.training.early_stopping, state, early_stop.live_counter(trainer))
    eval_after = None
    if prep.data.eval is not None:
        last = state.log_history[-1] if state.log_history else {}
        # The trainer may just have evaluated at the last step (evalSteps); don't do it twice.
        eval_after = (last["eval_loss"] if "eval_loss" in last and last.get("step") == state.global_step
                      else trainer.evaluate()["eval_loss"])
    timer.mark("eval_after")
    return Fitted(state, eval_before, eval_after, train_runtime, stopped_early=stopped)


def _train_or_finish(trainer, resume: ResumePoint | None, total_steps: int, config: TrainerConfig) -> float | None:
    if resume is not None and resume.step and (0 < total_steps <= resume.step or early_stop.stopped_in_checkpoint(
            resume.path, config.training.early_stopping)):
        # The previous attempt ended right after its last checkpoint (its last step, or the evaluation that stopped
        # it early): HF's Trainer would train on past it. Take the checkpoint's weights and state and finish.
        from transformers import TrainerState

        trainer._load_from_checkpoint(str(resume.path))
        trainer.state = TrainerState.load_from_json(str(resume.path / "trainer_state.json"))
        early_stop.live_counter(trainer, restore=True)
        return 0.0
    result = trainer.train(resume_from_checkpoint=str(resume.path) if resume else None)
    return result.metrics.get("train_runtime")


def publish(prep: Prepared, trainer, fitted: Fitted, ctx: RunContext) -> TerminationMessage:
    """Adapter, merged model, history and summary to the output; a failed upload raises StorageError (exit 1)."""
    config, out, state = prep.config, prep.out, fitted.state
    reporter, uploader, timer, history = ctx.reporter, ctx.uploader, ctx.timer, ctx.history
    adapter_dir = prep.work / contract.ADAPTER_DIR
    trainer.save_model(str(adapter_dir))
    if prep.initial_adapter is not None:  # pissa/olora: published for the unmodified base (rank 2r)
        conversion.save_converted(prep.model, adapter_dir, prep.initial_adapter)
    (adapter_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle: not part of the deliverable
    (adapter_dir / ADAPTER_IDENTITY_FILE).write_text(json.dumps(prep.identity.to_wire(), indent=2))
    verdict, load = finish_adapter(adapter_dir, config, prep.identity, getattr(prep.model.config, "model_type", None),
                                   out.uri(contract.ADAPTER_DIR))
    if uploader is not None:
        uploader.close()  # the last checkpoints first: a resume after this point finds them
        uploader.raise_fatal()  # a checkpoint held a secret: so does the adapter, most likely
    files = out.upload_dir(adapter_dir, contract.ADAPTER_DIR)
    timer.mark("upload_adapter")
    pushed, push_failed = push_oci(prep, adapter_dir)  # a failure is raised once everything else is written
    merged_uri = None
    if config.output.merge_adapter:
        merged_uri = model.merge_and_upload(config, trainer.model, prep.tokenizer, prep.model_dir, prep.work, out,
                                            prep.dtype_name)
        timer.mark("merge")
    written = history.finish(state.log_history, fitted.eval_before, fitted.eval_after, state.global_step)
    timer.mark("history")
    registered = ctx.tracker.register_adapter(adapter_dir) if ctx.tracker is not None else None  # the run ended
    sampled = write_samples(prep, out)
    timer.mark("samples")
    facts = _facts(prep, fitted, ctx, files, merged_uri)
    facts.servability, facts.how_to_load, facts.loss_plot_skipped = verdict.to_wire(), load, written.plot_skipped
    facts.samples = sampled.summary
    facts.resolved = resolved_config(trainer.args, prep.model.peft_config["default"], resolved_extra(config))
    facts.oci = pushed.to_wire() if pushed is not None else _push_error(config, prep, push_failed)
    artifacts = written.artifacts.merged_with(sampled.artifacts).merged_with(Artifacts(
        adapter=facts.adapter_uri, merged=merged_uri, summary=out.uri(contract.SUMMARY_FILE)))
    facts.artifacts = artifacts.to_wire()
    out.put_json(contract.SUMMARY_FILE, build_summary(config, facts))
    log.info("servability: %s", verdict.describe())
    reporter.artifacts_written(artifacts)
    if push_failed is not None:
        raise push_failed
    reporter.finished(state.global_step, fitted.eval_after, fitted.eval_before)
    done = fitted.stopped_early.describe() if fitted.stopped_early is not None else f"trained {state.global_step} steps"
    metrics = Metrics.model_validate({**reporter.metrics.model_dump(), "loss": last_train_loss(facts.log_history),
                                      "eval_loss_before": fitted.eval_before})  # validated: 4 decimals
    return TerminationMessage(
        outcome="succeeded", reason=Reason.COMPLETED,
        message=f"{done}; eval loss {_fmt(fitted.eval_before)} -> {_fmt(fitted.eval_after)}",
        adapter=AdapterRef(uri=facts.adapter_uri, files=files, oci=pushed), metrics=metrics, step=state.global_step,
        total_steps=state.max_steps, resumed_from_step=facts.resumed_from_step, servability=verdict,
        model_registration=registered,
        stopped_early=fitted.stopped_early,
    )


def push_oci(prep: Prepared, adapter_dir: Path) -> tuple[OciArtifactRef | None, InvalidInput | StorageError | None]:
    """output.push.oci: the adapter's files to the registry, or the error (InvalidInput OciPushFailed, or
    StorageError when the registry did not answer within the retry budget), told with where the adapter is."""
    push = prep.config.output.push
    if push is None:
        return None, None
    adapter_uri = prep.out.uri(contract.ADAPTER_DIR)
    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    annotations = oci.adapter_annotations(prep.config, prep.identity, adapter_uri, created)
    try:
        return oci.push_adapter(adapter_dir, push.oci, prep.identity.name, annotations, os.environ), None
    except InvalidInput as exc:
        return None, InvalidInput(exc.reason, f"{exc.message}; the adapter is at {adapter_uri}", field=exc.field)
    except StorageError as exc:
        return None, StorageError(f"pushing the adapter to {push.oci.reference(prep.identity.name)}: {exc}; "
                                  f"the adapter is at {adapter_uri}")


def _push_error(config: TrainerConfig, prep: Prepared, failed: Exception | None) -> dict[str, str] | None:
    if failed is None or config.output.push is None:
        return None
    return {"reference": config.output.push.oci.reference(prep.identity.name), "error": str(failed)}


def _facts(prep: Prepared, fitted: Fitted, ctx: RunContext, files, merged_uri: str | None) -> RunFacts:
    state, resume, reporter = fitted.state, prep.resume, ctx.reporter
    trainable, total = prep.model.get_nb_trainable_parameters()
    output = prep.checks.output
    return RunFacts(
        identity=prep.identity, adapter_uri=prep.out.uri(contract.ADAPTER_DIR), files=files, steps=state.global_step,
        total_steps=state.max_steps, epochs=state.epoch,
        tokens_seen=int(getattr(state, "num_input_tokens_seen", 0) or 0), log_history=state.log_history,
        train_rows=len(prep.data.train), eval_rows=len(prep.data.eval) if prep.data.eval is not None else 0,
        dataset={**prep.checks.dataset.summary(), **prep.data.summary(prep.config.training.max_length)},
        trainable_parameters=trainable, total_parameters=total, device="cuda" if prep.cuda else "cpu",
        dtype=prep.dtype_name, num_processes=world_size(), nodes=prep.config.training.nodes,
        processes_per_node=local_world_size(), merged_uri=merged_uri,
        eval_loss_before=fitted.eval_before, eval_loss_after=fitted.eval_after, train_runtime=fitted.train_runtime,
        tokens_per_second=reporter.progress.tokens_per_second,
        resumed_from_step=resume.step if resume else None, resumed_from_uri=resume.uri if resume else None,
        resumed_from_run=resume.adopted_from if resume else None,
        replaced_runs=output.replaced if output is not None and output.action == "overwrite" else [],
        durations={**ctx.timer.marks, "total": ctx.timer.total()}, versions=library_versions(),
        performance=reporter.performance.to_wire() if reporter.performance is not None else None,
        data_shards=fitted.data_shards,
        stopped_early=fitted.stopped_early.to_wire() if fitted.stopped_early is not None else None,
    )


def work_dir(settings: Settings) -> Path:
    raw = settings.work_dir
    if raw:
        p = Path(raw)
        p.mkdir(parents=True, exist_ok=True)
        return p
    return Path(tempfile.mkdtemp(prefix="lft-work-"))


def planned_steps(trainer) -> int:
    """Optimizer steps the run will take (known before train(), for the step-0 progress event)."""
    import math

    args = trainer.args
    if args.max_steps and args.max_steps > 0:
        return int(args.max_steps)
    try:
        batches = len(trainer.get_train_dataloader())
    except (TypeError, ValueError):
        return 0
    per_epoch = max(1, math.ceil(batches / args.gradient_accumulation_steps))
    return int(math.ceil(per_epoch * args.num_train_epochs))


def resolved_extra(config: TrainerConfig) -> tuple[str, ...]:
    """The SFTConfig/LoraConfig keys the summary's resolved block adds: training.extra's, training.earlyStopping's."""
    stopping = ("metric_for_best_model", "greater_is_better") if config.training.early_stopping is not None else ()
    return tuple(sorted(config.training.extra or {})) + stopping


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def eval_before_from_checkpoint(ckpt: Path) -> float | None:
    """The step-0 eval loss of the first attempt, kept in the checkpoint (ours, or the trainer's log history)."""
    try:
        before = json.loads((ckpt / RUN_STATE_FILE).read_text()).get("evalLossBefore")
        if before is not None:
            return float(before)
    except (OSError, ValueError, AttributeError):
        pass
    try:
        state = json.loads((ckpt / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None
    for entry in state.get("log_history", []):
        if "eval_loss" in entry and entry.get("step", 0) == 0:
            return float(entry["eval_loss"])
    return None


def _preempted(uploader, step: int, resumed_from: int | None, total_steps: int | None = None) -> TerminationMessage:
    ok = True
    if uploader is not None:
        ok = uploader.flush(timeout=None)
        uploader.raise_fatal()  # a checkpoint held a secret: fail for good, not "preempted, resume"
    last = uploader.last_uploaded if uploader is not None else None
    msg = (f"stopped by SIGTERM at step {step}; checkpoint {last.uri} uploaded" if last is not None and ok
           else f"stopped by SIGTERM at step {step}; no new checkpoint uploaded")
    log.warning(msg)  # the uploader's callback already reported the checkpoint (a forced status patch)
    return TerminationMessage(outcome="preempted", reason=Reason.PREEMPTED, message=msg, step=step,
                              total_steps=total_steps, resumed_from_step=resumed_from)

