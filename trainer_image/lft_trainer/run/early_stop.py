"""training.earlyStopping: transformers' EarlyStoppingCallback on the eval loss, its count kept across resumes, and
what the run reports when it stopped early (contract.EarlyStop: the summary's stoppedEarly, the Succeeded condition).

load_best_model_at_end is not used, on purpose; it conflicts with how checkpoints work here:
- it requires the checkpoints to follow the evaluations (save strategy = eval strategy, checkpointing.everySteps a
  multiple of training.evalSteps), which would tie the resume granularity to the eval cadence;
- the best checkpoint it reloads is a local directory of the pod: after a resume in a new pod (pod loss, suspend,
  Kueue preemption) it is gone, or deleted remotely by checkpointing.keepLast, and transformers then silently
  keeps the last weights: the same spec would give a different adapter depending on whether the run was resumed;
- on multi-node runs only node 0 has the checkpoints on disk.
So the adapter is the weights at the step training stopped, and the summary names the best eval loss and its step.

Only metric_for_best_model is set (sft_args.knob_kwargs): the Trainer then keeps state.best_metric and
state.best_global_step after each evaluation during training, which is what the callback compares with. Its count
of evaluations without improvement is kept in the checkpoints (TrainerState.stateful_callbacks, written at each
save) and restored from them when the run resumes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lft_api.contract import EarlyStop
from lft_api.training_knobs import EarlyStoppingSpec

STATE_KEY = "EarlyStopping"  # the callback's class name: its key in TrainerState.stateful_callbacks
COUNTER = "early_stopping_patience_counter"


def callbacks(spec: EarlyStoppingSpec | None, has_eval: bool) -> list[Any]:
    """The early-stopping callback for SFTTrainer, when training.earlyStopping is set (and there is an eval set,
    which the spec's validation guarantees)."""
    if spec is None or not has_eval:
        return []
    from transformers import EarlyStoppingCallback

    class EarlyStopping(EarlyStoppingCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            # The count of a resumed checkpoint (transformers restores callbacks only with
            # restore_callback_states_from_checkpoint, which would also restore the TrainerControl of a preempted
            # attempt). Registered in the state in any case: the Trainer's save fails on a callback missing from
            # a resumed state (a checkpoint of output.resumeFrom written without early stopping).
            self.early_stopping_patience_counter = saved_counter(state.stateful_callbacks) or 0
            state.stateful_callbacks[STATE_KEY] = self.state()

    return [EarlyStopping(early_stopping_patience=spec.patience, early_stopping_threshold=spec.threshold)]


def saved_counter(stateful_callbacks: dict[str, Any] | None) -> int | None:
    """The callback's count of evaluations without improvement, as a TrainerState keeps it."""
    saved = (stateful_callbacks or {}).get(STATE_KEY)
    if isinstance(saved, list):
        saved = saved[-1] if saved else None
    counter = saved.get("attributes", {}).get(COUNTER) if isinstance(saved, dict) else None
    return counter if isinstance(counter, int) else None


def live_counter(trainer, restore: bool = False) -> int:
    """The count of the trainer's early-stopping callback (0 without one); restore: first set it from the
    trainer's state (a run that finishes from its checkpoint without training)."""
    found = [cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == STATE_KEY]
    if not found:
        return 0
    if restore:
        found[0].early_stopping_patience_counter = saved_counter(trainer.state.stateful_callbacks) or 0
    return found[0].early_stopping_patience_counter


def stopped_in_checkpoint(ckpt: Path, spec: EarlyStoppingSpec | None) -> bool:
    """Was `ckpt` saved at the evaluation that stopped training? (Then the run resumes by finishing: training on
    would only add steps the first attempt did not take.)"""
    if spec is None:
        return False
    try:
        state = json.loads((ckpt / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    counter = saved_counter(state.get("stateful_callbacks")) if isinstance(state, dict) else None
    return counter is not None and counter >= spec.patience


def outcome(spec: EarlyStoppingSpec | None, state, counter: int) -> EarlyStop | None:
    """What to report when training stopped before its last step because the eval loss stopped improving."""
    if spec is None or counter < spec.patience or not state.max_steps or state.global_step >= state.max_steps:
        return None
    best = state.best_metric
    return EarlyStop(step=state.global_step, total_steps=state.max_steps,
                     best_eval_loss=float(best) if best is not None else None,
                     best_step=getattr(state, "best_global_step", None), patience=spec.patience,
                     threshold=spec.threshold)
