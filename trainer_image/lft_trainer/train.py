"""One training run: pre-flight, resume, PEFT LoRA with TRL's SFTTrainer, checkpoints to object
storage, adapter + summary upload, and the result for the operator.

`run(config)` returns a TerminationMessage; __main__ turns it into the exit code. Under DDP every
rank calls run(); only rank 0 checks storage, reports progress, uploads and writes the result.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lft_api import contract
from lft_api.contract import AdapterRef, ExitCode, Metrics, TerminationMessage
from lft_api.spec import TrainerConfig

from . import data, preflight
from .errors import InvalidInput
from .filesystems import split_uri

log = logging.getLogger("lft_trainer.train")

ENV_WORK_DIR = "LFT_WORK_DIR"
ENV_RESUME_DIR = "LFT_RESUME_DIR"  # set by the DDP launcher: rank 0 of the parent downloaded the checkpoint
ENV_RESUME_STEP = "LFT_RESUME_STEP"
ENV_SKIP_STORAGE_CHECK = "LFT_SKIP_STORAGE_CHECK"  # children of the launcher: the parent checked already


# ---------------------------------------------------------------------------------------------
# distributed helpers (torchrun-style env)
# ---------------------------------------------------------------------------------------------
def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


# ---------------------------------------------------------------------------------------------
# SIGTERM -> checkpoint -> exit PREEMPTED
# ---------------------------------------------------------------------------------------------
class Preemption:
    """Set by SIGTERM; the training loop checks it at every step end (all ranks agree, see callback)."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.at: float | None = None

    def install(self) -> None:
        def handler(signum, frame):
            if not self.requested.is_set():
                self.at = time.monotonic()
                log.warning("SIGTERM: saving a checkpoint at the end of this step, then exiting")
            self.requested.set()

        signal.signal(signal.SIGTERM, handler)


# ---------------------------------------------------------------------------------------------
# pure config -> library arguments
# ---------------------------------------------------------------------------------------------
def resolve_dtype_name(requested: str, cuda: bool, bf16_ok: bool) -> str:
    """The weights dtype: auto = bf16 on GPUs that have it, else fp16 on GPU, fp32 on CPU; fp16 on CPU -> fp32."""
    if requested == "auto":
        return ("bfloat16" if bf16_ok else "float16") if cuda else "float32"
    if requested == "float16" and not cuda:
        return "float32"  # fp16 training needs a GPU (GradScaler)
    return requested


def lora_kwargs(config: TrainerConfig) -> dict[str, Any]:
    lora = config.lora
    targets: Any = lora.target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"
    return dict(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                bias=lora.bias, use_dora=lora.use_dora, task_type="CAUSAL_LM")


def sft_kwargs(config: TrainerConfig, output_dir: str, cuda: bool, dtype_name: str, has_eval: bool) -> dict[str, Any]:
    """SFTConfig arguments from the spec. Pure, unit-tested."""
    t = config.training
    kw: dict[str, Any] = dict(
        output_dir=output_dir,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio,  # a float < 1 is a ratio of the total steps in this transformers
        weight_decay=t.weight_decay,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        max_length=t.max_length,
        packing=t.packing,
        assistant_only_loss=t.assistant_only_loss,
        # Checkpointing recomputes activations to save GPU memory; on CPU memory is not the limit and
        # it only costs time (about a third more compute per step).
        gradient_checkpointing=bool(t.gradient_checkpointing and cuda),
        gradient_checkpointing_kwargs={"use_reentrant": False},
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
        report_to=[],
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        save_only_model=False,  # optimizer, scheduler and RNG state: resume exactly
        remove_unused_columns=True,
    )
    if t.max_steps:
        kw["max_steps"] = t.max_steps
    else:
        kw["num_train_epochs"] = t.epochs
    if world_size() > 1 and not cuda:
        kw["ddp_backend"] = "gloo"
    return kw


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def _model_dir(config: TrainerConfig, work: Path) -> str:
    """A local directory or a hub id for from_pretrained; remote URIs are downloaded first."""
    name = config.model.name
    if not data.looks_like_path(name):
        return name
    from . import storage as st

    protocol, path = split_uri(os.path.expanduser(name))
    if protocol == "file":
        return path
    dest = work / "model"
    if not (dest / "config.json").exists():
        st.Storage(name, config.storage).download_dir("", dest)
    return str(dest)


def _hub_error(exc: Exception, what: str, name: str) -> Exception:
    """Map a missing hub repo / revision to InvalidInput; keep network trouble retryable."""
    kinds = {"RepositoryNotFoundError", "RevisionNotFoundError", "GatedRepoError", "EntryNotFoundError"}
    chain = [exc, exc.__cause__, exc.__context__]
    if any(type(e).__name__ in kinds for e in chain if e is not None) or (
        isinstance(exc, OSError) and "is not a local folder and is not a valid model identifier" in str(exc)
    ):
        return InvalidInput(preflight.MODEL_NOT_FOUND, f"{what} {name}: {str(exc).splitlines()[0][:300]}",
                            file=name, field="model.name")
    return exc


def load_tokenizer(config: TrainerConfig, model_dir: str):
    from transformers import AutoTokenizer

    from .chat_templates import PHI3_CHAT_TEMPLATE

    try:
        tok = AutoTokenizer.from_pretrained(model_dir, revision=config.model.revision,
                                            trust_remote_code=config.model.trust_remote_code)
    except Exception as exc:
        raise _hub_error(exc, "tokenizer of model", config.model.name) from exc
    if not tok.chat_template:
        log.warning("the tokenizer has no chat template: using the Phi-3 template")
        tok.chat_template = PHI3_CHAT_TEMPLATE
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    tok.padding_side = "right"
    return tok


def load_model(config: TrainerConfig, model_dir: str, cuda: bool, dtype_name: str):
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = dict(revision=config.model.revision, trust_remote_code=config.model.trust_remote_code,
                                  dtype=getattr(torch, dtype_name))
    if config.model.attn_implementation != "auto":
        kwargs["attn_implementation"] = config.model.attn_implementation
    q = config.lora.quantization
    if q != "none":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
            if q == "4bit" else BitsAndBytesConfig(load_in_8bit=True)
        )
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    except Exception as exc:
        raise _hub_error(exc, "model", config.model.name) from exc
    model.config.use_cache = False  # no KV cache while training
    if q != "none":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.training.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def build_datasets(config: TrainerConfig, report: preflight.DatasetReport, source: data.DatasetSource):
    """(train, eval or None) as datasets.Dataset, from the rows pre-flight validated."""
    import datasets

    spec = config.dataset
    seed = config.training.seed

    def to_ds(split: str):
        rows = report.splits[split]
        if not rows.sampled:
            return datasets.Dataset.from_list(rows.rows)
        # A huge dataset: pre-flight checked a bounded sample; load the files with datasets.
        cols = list(preflight.FORMAT_FIELDS[report.format])
        if source.is_hub:
            ds = data.load_hub_split(source.hub_id, split)
        else:
            files = source.files[split]
            kind = files[0].kind
            ds = datasets.load_dataset("parquet" if kind == "parquet" else "json",
                                       data_files=[str(f.path) for f in files], split="train")
        return ds.select_columns(cols)

    train = to_ds(spec.train_split)
    evald = None
    if spec.eval_split:
        evald = to_ds(spec.eval_split)
    elif spec.eval_fraction > 0 and len(train) >= 2:
        n_eval = min(len(train) - 1, max(1, round(len(train) * spec.eval_fraction)))
        parts = train.train_test_split(test_size=n_eval, seed=seed, shuffle=True)
        train, evald = parts["train"], parts["test"]
    if spec.max_samples and len(train) > spec.max_samples:
        train = train.shuffle(seed=seed).select(range(spec.max_samples))
    return train, evald


# ---------------------------------------------------------------------------------------------
# callbacks
# ---------------------------------------------------------------------------------------------
RUN_STATE_FILE = "lft_run_state.json"  # our additions to a checkpoint (the eval loss before step 1)


def make_control_callback(preemption: Preemption, uploader, local_ckpt_root: Path, reporter=None):
    from transformers import TrainerCallback

    class ControlCallback(TrainerCallback):
        """Stops at SIGTERM with a checkpoint; hands every saved checkpoint to the uploader (rank 0)."""

        def __init__(self):
            self.preempted_at_step: int | None = None

        def _stop_requested(self) -> bool:
            flag = preemption.requested.is_set()
            if world_size() > 1:
                # Every rank must stop at the same step, or the collectives of the save deadlock.
                import torch
                import torch.distributed as dist

                if dist.is_available() and dist.is_initialized():
                    t = torch.tensor([1.0 if flag else 0.0],
                                     device="cuda" if torch.cuda.is_available() else "cpu")
                    dist.all_reduce(t, op=dist.ReduceOp.MAX)
                    flag = bool(t.item() > 0)
            return flag

        def on_step_end(self, args, state, control, **kwargs):
            if self._stop_requested():
                control.should_save = True
                control.should_training_stop = True
                control.should_evaluate = False
                self.preempted_at_step = state.global_step
            return control

        def on_save(self, args, state, control, **kwargs):
            if uploader is not None and state.is_world_process_zero:
                ckpt = local_ckpt_root / f"checkpoint-{state.global_step}"
                if ckpt.is_dir():
                    # train() starts a fresh log history, so the step-0 eval is not in trainer_state.json.
                    before = getattr(reporter, "eval_loss_before", None)
                    (ckpt / RUN_STATE_FILE).write_text(json.dumps({"evalLossBefore": before}))
                    uploader.submit(ckpt, state.global_step)

    return ControlCallback()


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
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


def _work_dir() -> Path:
    raw = os.environ.get(ENV_WORK_DIR)
    if raw:
        p = Path(raw)
        p.mkdir(parents=True, exist_ok=True)
        return p
    return Path(tempfile.mkdtemp(prefix="lft-work-"))


def run_preflight(config: TrainerConfig, work: Path, cuda: bool, check_storage: bool):
    """Everything before the model loads. Returns (dataset source, dataset report, output storage)."""
    from .storage import Storage

    preflight.check_quantization(config.lora, cuda)
    if config.model.attn_implementation == "flash_attention_2" and not cuda:
        raise InvalidInput(preflight.UNSUPPORTED_HARDWARE, "model.attnImplementation flash_attention_2 needs a "
                           "CUDA GPU", field="model.attnImplementation")
    out = Storage(config.output.uri, config.storage)
    if check_storage:
        out.check_access(write=True)
    preflight.check_model(config.model, config.storage)
    source = data.resolve(config.dataset, config.storage, work)
    report = preflight.check_dataset(source, config.dataset)
    return source, report, out


def run(config: TrainerConfig, reporter=None, preemption: Preemption | None = None) -> TerminationMessage:
    import torch

    from . import checkpoints
    from .progress import Reporter, StdoutSink, make_callback

    timer = Timer()
    main = is_main()
    preemption = preemption or Preemption()
    reporter = reporter if reporter is not None else Reporter([StdoutSink()])
    work = _work_dir()
    cuda = torch.cuda.is_available()

    source, report, out = run_preflight(config, work, cuda,
                                        check_storage=main and not os.environ.get(ENV_SKIP_STORAGE_CHECK))
    log.info("pre-flight ok: %s", json.dumps(report.summary()))
    timer.mark("preflight")

    # Resume: the newest complete checkpoint under the output URI.
    resume_dir: Path | None = None
    resumed_from: int | None = None
    if os.environ.get(ENV_RESUME_DIR):
        resume_dir = Path(os.environ[ENV_RESUME_DIR])
        resumed_from = int(os.environ.get(ENV_RESUME_STEP, "0")) or None
    elif main and world_size() == 1:
        found = checkpoints.download_latest_checkpoint(out, work / "resume")
        if found is not None:
            ref, resume_dir = found
            resumed_from = ref.step
            log.info("resuming from %s", ref.uri)
    reporter.resumed_from_step = resumed_from
    timer.mark("resume_download")

    model_dir = _model_dir(config, work)
    tokenizer = load_tokenizer(config, model_dir)
    train_rows = report.splits[config.dataset.train_split]
    too_long, measured = preflight.count_too_long(train_rows.rows, report.format, tokenizer,
                                                  config.training.max_length)
    if too_long:
        log.warning("%d of %d measured rows are longer than training.maxLength=%d tokens and will be truncated",
                    too_long, measured, config.training.max_length)
    train_ds, eval_ds = build_datasets(config, report, source)

    dtype_name = resolve_dtype_name(config.model.dtype, cuda, cuda and torch.cuda.is_bf16_supported())
    from transformers import set_seed

    set_seed(config.training.seed)
    model = load_model(config, model_dir, cuda, dtype_name)
    timer.mark("load")

    from peft import LoraConfig, get_peft_model
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    model = get_peft_model(model, LoraConfig(**lora_kwargs(config)))
    trainable, total_params = model.get_nb_trainable_parameters()
    log.info("trainable parameters: %d of %d (%.3f%%)", trainable, total_params, 100.0 * trainable / total_params)

    local_ckpts = work / "checkpoints"
    uploader = None
    if main:
        uploader = checkpoints.CheckpointUploader(out, config.checkpointing.keep_last,
                                                  on_uploaded=reporter.checkpoint_uploaded)
    args = SFTConfig(**sft_kwargs(config, str(local_ckpts), cuda, dtype_name, eval_ds is not None))
    control_cb = make_control_callback(preemption, uploader, local_ckpts, reporter)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                         processing_class=tokenizer, callbacks=[make_callback(reporter), control_cb])
    trainer.remove_callback(PrinterCallback)  # prints python dicts on stdout; our events are JSON lines
    reporter.total_steps = planned_steps(trainer)
    timer.mark("setup")

    eval_before: float | None = None
    try:
        if eval_ds is not None and resume_dir is None and not preemption.requested.is_set():
            eval_before = trainer.evaluate()["eval_loss"]
            reporter.eval_loss_before = eval_before
        elif resume_dir is not None:
            eval_before = _eval_before_from_checkpoint(resume_dir)
            reporter.eval_loss_before = eval_before
        timer.mark("eval_before")

        if preemption.requested.is_set():
            return _preempted(config, uploader, reporter, step=resumed_from or 0, resumed_from=resumed_from)
        if resume_dir is not None and resumed_from and 0 < reporter.total_steps <= resumed_from:
            # The previous attempt ended right after its last checkpoint: HF's Trainer would train one
            # step past max_steps on resume. Take the checkpoint's weights and state and finish.
            from transformers import TrainerState

            trainer._load_from_checkpoint(str(resume_dir))
            trainer.state = TrainerState.load_from_json(str(resume_dir / "trainer_state.json"))
            train_runtime = 0.0
        else:
            result = trainer.train(resume_from_checkpoint=str(resume_dir) if resume_dir else None)
            train_runtime = result.metrics.get("train_runtime")
        timer.mark("train")
        state = trainer.state
        if control_cb.preempted_at_step is not None:
            return _preempted(config, uploader, reporter, step=state.global_step, resumed_from=resumed_from,
                              total_steps=state.max_steps)

        eval_after = None
        if eval_ds is not None:
            last = state.log_history[-1] if state.log_history else {}
            # The trainer may just have evaluated at the last step (evalSteps); don't do it twice.
            eval_after = (last["eval_loss"] if "eval_loss" in last and last.get("step") == state.global_step
                          else trainer.evaluate()["eval_loss"])
        timer.mark("eval_after")
        if not main:
            return TerminationMessage(outcome="succeeded", reason="Completed", step=state.global_step,
                                      total_steps=state.max_steps)

        adapter_dir = work / contract.ADAPTER_DIR
        trainer.save_model(str(adapter_dir))
        (adapter_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle: not part of the deliverable
        if uploader is not None:
            uploader.close()  # the last checkpoints first: a resume after this point finds them
        files = out.upload_dir(adapter_dir, contract.ADAPTER_DIR)
        timer.mark("upload_adapter")
        merged_uri = None
        if config.output.merge_adapter:
            merged_uri = _merge_and_upload(config, trainer.model, tokenizer, model_dir, work, out, dtype_name)
            timer.mark("merge")

        train_loss = _last_train_loss(state.log_history)
        metrics = Metrics(loss=train_loss, eval_loss=eval_after, eval_loss_before=eval_before,
                          learning_rate=reporter.learning_rate, grad_norm=reporter.grad_norm)
        summary = {
            "config": config.to_wire(),
            "outcome": "succeeded",
            "adapterUri": out.uri(contract.ADAPTER_DIR),
            "mergedUri": merged_uri,
            "metrics": {"trainLoss": train_loss, "evalLossBefore": eval_before, "evalLossAfter": eval_after,
                        "evalLossImprovement": (eval_before - eval_after)
                        if eval_before is not None and eval_after is not None else None,
                        "trainRuntimeSeconds": train_runtime,
                        "trainTokensPerSecond": reporter.tokens_per_second},
            "steps": state.global_step,
            "totalSteps": state.max_steps,
            "epochs": state.epoch,
            "resumedFromStep": resumed_from,
            "tokensSeen": int(getattr(state, "num_input_tokens_seen", 0) or 0),
            "trainRows": len(train_ds),
            "evalRows": len(eval_ds) if eval_ds is not None else 0,
            "dataset": {**report.summary(), "rowsOverMaxLength": too_long, "rowsMeasuredForLength": measured},
            "trainableParameters": trainable,
            "totalParameters": total_params,
            "device": "cuda" if cuda else "cpu",
            "dtype": dtype_name,
            "numProcesses": world_size(),
            "durationsSeconds": {**timer.marks, "total": timer.total()},
            "libraryVersions": library_versions(),
            "files": [f.to_wire() for f in files],
            "logHistory": state.log_history[-50:],
        }
        out.put_json(contract.SUMMARY_FILE, summary)
        reporter.eval_loss = eval_after
        reporter.step = state.global_step
        reporter.emit("end")
        return TerminationMessage(
            outcome="succeeded", reason="Completed",
            message=f"trained {state.global_step} steps; eval loss {_fmt(eval_before)} -> {_fmt(eval_after)}",
            adapter=AdapterRef(uri=out.uri(contract.ADAPTER_DIR), files=files), metrics=metrics,
            step=state.global_step, total_steps=state.max_steps, resumed_from_step=resumed_from,
        )
    finally:
        if uploader is not None:
            uploader.close(timeout=600)


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


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _last_train_loss(history: list[dict]) -> float | None:
    for entry in reversed(history):
        if "loss" in entry:
            return float(entry["loss"])
    return None


def _eval_before_from_checkpoint(ckpt: Path) -> float | None:
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


def _preempted(config, uploader, reporter, step: int, resumed_from: int | None,
               total_steps: int | None = None) -> TerminationMessage:
    ok = True
    if uploader is not None:
        ok = uploader.flush(timeout=None)
    last = uploader.last_uploaded if uploader is not None else None
    msg = (f"stopped by SIGTERM at step {step}; checkpoint {last.uri} uploaded" if last is not None and ok
           else f"stopped by SIGTERM at step {step}; no new checkpoint uploaded")
    log.warning(msg)  # the uploader's callback already reported the checkpoint (a forced status patch)
    return TerminationMessage(outcome="preempted", reason="Preempted", message=msg, step=step,
                              total_steps=total_steps, resumed_from_step=resumed_from)


def _merge_and_upload(config, peft_model, tokenizer, model_dir: str, work: Path, out, dtype_name: str) -> str:
    """Merge the adapter into an unquantized copy of the base model and upload it to <output>/merged/."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter_dir = work / contract.ADAPTER_DIR
    merge_dtype = "bfloat16" if config.lora.quantization != "none" else dtype_name
    base = AutoModelForCausalLM.from_pretrained(model_dir, revision=config.model.revision,
                                                trust_remote_code=config.model.trust_remote_code,
                                                dtype=getattr(torch, merge_dtype))
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    dest = work / contract.MERGED_DIR
    merged.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    out.upload_dir(dest, contract.MERGED_DIR)
    shutil.rmtree(dest, ignore_errors=True)
    return out.uri(contract.MERGED_DIR)


def exit_code_for(msg: TerminationMessage) -> int:
    return {"succeeded": ExitCode.SUCCEEDED, "invalid_input": ExitCode.INVALID_INPUT,
            "preempted": ExitCode.PREEMPTED}.get(msg.outcome, ExitCode.ERROR)
