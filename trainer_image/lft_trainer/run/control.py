"""The run's own TrainerCallback and Trainer mixin: stopping at SIGTERM with a checkpoint, handing checkpoints to
the uploader, and recording which rows each rank trained on. Written at module level; transformers' base classes
are added at first use (reporting.progress.as_trainer_callback, recording_trainer), so importing this module needs
no transformers."""

from __future__ import annotations

import json
from pathlib import Path

from ..data import shards
from ..reporting.artifacts import HistoryWriter
from ..reporting.progress import as_trainer_callback
from .distributed import Preemption, world_size

RUN_STATE_FILE = "lft_run_state.json"  # our additions to a checkpoint (the eval loss before step 1)


class ControlCallback:
    """Stops at SIGTERM with a checkpoint; hands every saved checkpoint to the uploader and refreshes
    metrics.jsonl/loss.png (both in background threads, rank 0). A TrainerCallback through
    progress.as_trainer_callback (make_control_callback)."""

    def __init__(self, preemption: Preemption, uploader, local_ckpt_root: Path, history: HistoryWriter | None = None):
        self.preemption, self.uploader, self.local_ckpt_root, self.history = preemption, uploader, local_ckpt_root, history
        self.preempted_at_step: int | None = None
        self.eval_loss_before: float | None = None  # set by fit() once known

    def _stop_requested(self) -> bool:
        flag = self.preemption.requested.is_set()
        if world_size() > 1:
            # Every rank must stop at the same step, or the collectives of the save deadlock.
            import torch
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                t = torch.tensor([1.0 if flag else 0.0], device="cuda" if torch.cuda.is_available() else "cpu")
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
        if self.uploader is not None and state.is_world_process_zero:
            ckpt = self.local_ckpt_root / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                # train() starts a fresh log history, so the step-0 eval is not in trainer_state.json.
                (ckpt / RUN_STATE_FILE).write_text(json.dumps({"evalLossBefore": self.eval_loss_before}))
                self.uploader.submit(ckpt, state.global_step)
        if self.history is not None and state.is_world_process_zero:
            self.history.refresh(state.log_history, self.eval_loss_before)


def make_control_callback(preemption: Preemption, uploader, local_ckpt_root: Path,
                          history: HistoryWriter | None = None) -> ControlCallback:
    return as_trainer_callback(ControlCallback)(preemption, uploader, local_ckpt_root, history)


class ShardRecording:
    """Mixed into TRL's SFTTrainer (recording_trainer): fingerprints the rows of each micro-batch it trains on
    (shards.py)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.shard_recorder = shards.ShardRecorder()

    def training_step(self, model, inputs, *args, **kwargs):
        self.shard_recorder.record(inputs, self.state.epoch)
        return super().training_step(model, inputs, *args, **kwargs)


def recording_trainer(base: type) -> type:
    """`base` (TRL's SFTTrainer) with ShardRecording."""
    return type("RecordingTrainer", (ShardRecording, base), {})
