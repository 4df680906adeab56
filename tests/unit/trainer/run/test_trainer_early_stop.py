"""training.earlyStopping (issue #23): the SFTConfig settings, transformers' callback with its count kept across
resumes, the finish from a checkpoint saved at the stopping evaluation, and what the run reports. API side (pydantic,
CEL): tests/unit/test_spec_knobs.py; a real run that stops early: tests/integration/test_trainer_knobs_extra.py."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from lft_api.spec import TrainerConfig
from lft_api.training_knobs import EarlyStoppingSpec
from lft_trainer.reporting.summary import build_summary
from lft_trainer.run import early_stop, sft_args, train

pytest.importorskip("transformers")

BASE = {"model": {"name": "m"}, "dataset": {"uri": "d"}, "output": {"uri": "s3://b/r"}}


def cfg(**training) -> TrainerConfig:
    return TrainerConfig.model_validate({**BASE, "training": {"evalSteps": 5, **training}})


def args(c: TrainerConfig):
    from trl import SFTConfig

    return SFTConfig(**sft_args.sft_kwargs(c, "/tmp/o", cuda=False, dtype_name="float32", has_eval=True))


def test_the_sft_config_compares_eval_losses_and_does_not_reload_the_best_checkpoint():
    a = args(cfg(earlyStopping={"patience": 2}))
    assert a.metric_for_best_model == "eval_loss" and a.greater_is_better is False
    assert a.load_best_model_at_end is False and a.eval_strategy == "steps" and a.eval_steps == 5
    plain = sft_args.sft_kwargs(cfg(), "/tmp/o", cuda=False, dtype_name="float32", has_eval=True)
    assert "metric_for_best_model" not in plain and "greater_is_better" not in plain
    assert train.resolved_extra(cfg(earlyStopping={"patience": 2})) == ("metric_for_best_model", "greater_is_better")


def evaluate(cb, a, state, control, losses):
    """What the Trainer does at each evaluation during training: the callback, then state.best_metric."""
    for step, loss in losses:
        state.global_step = step
        cb.on_evaluate(a, state, control, metrics={"eval_loss": loss})
        if state.best_metric is None or loss < state.best_metric:
            state.best_metric, state.best_global_step = loss, step
        if control.should_training_stop:
            return step
    return None


def test_the_callback_stops_after_patience_evaluations_without_improvement_and_resumes_its_count():
    from transformers import TrainerControl, TrainerState

    spec = EarlyStoppingSpec(patience=2, threshold=0.01)
    a = args(cfg(earlyStopping=spec.to_wire()))
    assert early_stop.callbacks(None, True) == [] and early_stop.callbacks(spec, False) == []
    (cb,) = early_stop.callbacks(spec, True)
    assert (cb.early_stopping_patience, cb.early_stopping_threshold) == (2, 0.01)
    state, control = TrainerState(max_steps=40), TrainerControl()
    cb.on_train_begin(a, state, control)
    assert early_stop.saved_counter(state.stateful_callbacks) == 0  # registered: the Trainer's save needs it
    # 1.0 best; 0.995 is not better by more than the threshold; 0.9 is; then two without improvement.
    stopped = evaluate(cb, a, state, control, [(5, 1.0), (10, 0.995), (15, 0.9), (20, 0.95), (25, 0.91), (30, 0.5)])
    assert stopped == 25 and cb.early_stopping_patience_counter == 2
    got = early_stop.outcome(spec, state, early_stop.live_counter(SimpleNamespace(
        callback_handler=SimpleNamespace(callbacks=[cb]))))
    assert got.to_wire() == {"step": 25, "totalSteps": 40, "bestEvalLoss": 0.9, "bestStep": 15, "patience": 2,
                             "threshold": 0.01}

    # A resume: the checkpoint's state (saved after one evaluation without improvement) gives the count back.
    resumed = TrainerState(max_steps=40, stateful_callbacks={"EarlyStopping": {"args": {}, "attributes": {
        early_stop.COUNTER: 1}}})
    resumed.best_metric = 0.9
    (cb2,) = early_stop.callbacks(spec, True)
    cb2.on_train_begin(a, resumed, TrainerControl())
    assert cb2.early_stopping_patience_counter == 1
    assert evaluate(cb2, a, resumed, TrainerControl(), [(20, 0.95)]) == 20


def test_no_early_stop_when_it_ran_to_the_end_or_the_count_is_short():
    spec = EarlyStoppingSpec(patience=2)
    state = SimpleNamespace(global_step=40, max_steps=40, best_metric=0.5, best_global_step=20)
    assert early_stop.outcome(spec, state, 2) is None  # the last step: not early
    state.global_step = 30
    assert early_stop.outcome(spec, state, 1) is None and early_stop.outcome(None, state, 5) is None
    assert early_stop.outcome(spec, state, 2).describe() == (
        "stopped early at step 30 of 40: 2 evaluation(s) in a row without the eval loss improving (best 0.5000 at "
        "step 20)")
    by = early_stop.outcome(EarlyStoppingSpec(patience=2, threshold=0.05), state, 2).describe()
    assert "without the eval loss improving by more than 0.05 (best" in by


def checkpoint(tmp_path, counter: int | None, step: int = 10):
    ckpt = tmp_path / f"checkpoint-{step}"
    ckpt.mkdir()
    callbacks = {} if counter is None else {"EarlyStopping": {"args": {}, "attributes": {early_stop.COUNTER: counter}}}
    ckpt.joinpath("trainer_state.json").write_text(json.dumps({
        "global_step": step, "max_steps": 40, "best_metric": 0.7, "best_global_step": 5, "log_history": [],
        "stateful_callbacks": callbacks}))
    return ckpt


def test_a_checkpoint_saved_at_the_stopping_evaluation_is_finished_not_trained_on(tmp_path):
    spec = EarlyStoppingSpec(patience=2)
    assert early_stop.stopped_in_checkpoint(checkpoint(tmp_path, 2), spec)
    assert not early_stop.stopped_in_checkpoint(tmp_path / "checkpoint-10", EarlyStoppingSpec(patience=3))
    assert not early_stop.stopped_in_checkpoint(tmp_path / "checkpoint-10", None)
    assert not early_stop.stopped_in_checkpoint(checkpoint(tmp_path, None, step=5), spec)
    assert not early_stop.stopped_in_checkpoint(tmp_path / "missing", spec)

    calls = []
    fake = SimpleNamespace(_load_from_checkpoint=calls.append, train=lambda **kw: calls.append("train"),
                           callback_handler=SimpleNamespace(callbacks=early_stop.callbacks(spec, True)))
    resume = SimpleNamespace(step=10, path=tmp_path / "checkpoint-10")
    c = cfg(earlyStopping={"patience": 2})
    assert train._train_or_finish(fake, resume, 40, c) == 0.0
    assert calls == [str(resume.path)] and fake.state.global_step == 10
    stop = early_stop.outcome(spec, fake.state, early_stop.live_counter(fake))
    assert (stop.step, stop.total_steps, stop.best_eval_loss, stop.best_step) == (10, 40, 0.7, 5)

    # Without early stopping (or below the patience) the same checkpoint is trained on.
    fake.train = lambda **kw: calls.append("train") or SimpleNamespace(metrics={"train_runtime": 1.5})
    assert train._train_or_finish(fake, resume, 40, cfg()) == 1.5 and calls[-1] == "train"


def test_the_summary_says_where_it_stopped():
    from lft_api.contract import FileDigest, RunIdentity
    from lft_trainer.reporting.summary import RunFacts

    facts = RunFacts(identity=RunIdentity(namespace="n", name="a", uid="u", spec_hash="h"), adapter_uri="s3://b/a",
                     files=[FileDigest(name="a", size=1, sha256="0" * 64)], steps=10, total_steps=40, epochs=0.5,
                     tokens_seen=1, log_history=[], train_rows=1, eval_rows=1, dataset={}, trainable_parameters=1,
                     total_parameters=2, device="cpu", dtype="float32", num_processes=1)
    assert build_summary(cfg(), facts)["stoppedEarly"] is None
    facts.stopped_early = {"step": 10, "totalSteps": 40, "bestEvalLoss": 0.7, "bestStep": 5, "patience": 2,
                           "threshold": 0.0}
    assert build_summary(cfg(), facts)["stoppedEarly"]["step"] == 10
