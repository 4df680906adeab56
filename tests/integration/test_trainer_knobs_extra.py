"""training.earlyStopping and training.extra on a real run of the tiny Phi-3 (CPU, file:// output, seconds): the run
stops early and succeeds, says where, and a second attempt into the same output finishes from the checkpoint saved at
the stopping evaluation; extra settings reach SFTConfig and LoraConfig (the summary's resolved block); an unknown
extra key fails the pre-flight before the model loads."""

from __future__ import annotations

import json

import pytest

from tests.support.trainer_run import config, progress_lines, run_in_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_early_stopping_succeeds_says_where_and_a_resume_finishes_there(tiny_model, tmp_path, monkeypatch, capsys):
    # threshold 100: no evaluation can improve on the first by that much, so with patience 1 the second one
    # (step 10) stops training: deterministic, whatever the losses.
    cfg = config(tiny_model, f"file://{tmp_path}/out", "http://unused", maxSteps=40, evalSteps=5,
                 earlyStopping={"patience": 1, "threshold": 100},
                 extra={"adam_beta2": "0.95", "layers_to_transform": "[0]"})
    cfg.pop("storage")
    cfg["checkpointing"] = {"everySteps": 10, "keepLast": 2}
    cfg["lora"] = {"targetModules": ["qkv_proj", "o_proj"]}  # PEFT: layers_to_transform needs a list here
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    code, term = run_in_process(cfg, tmp_path / "a", monkeypatch)
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert term["outcome"] == "succeeded" and term["reason"] == "Completed"
    assert term["step"] == 10 and term["totalSteps"] == 40
    stop = term["stoppedEarly"]
    # The best is the lowest eval loss (step 5 or 10: the tiny model's loss may still fall, by less than 100).
    assert stop == {"step": 10, "totalSteps": 40, "bestEvalLoss": stop["bestEvalLoss"], "bestStep": stop["bestStep"],
                    "patience": 1, "threshold": 100.0} and stop["bestStep"] in (5, 10)
    evals = {e["step"]: e["eval_loss"] for e in json.loads((tmp_path / "out/training_summary.json").read_text())[
        "logHistory"] if "eval_loss" in e and e.get("step") in (5, 10)}
    assert stop["bestEvalLoss"] == pytest.approx(min(evals.values()))
    assert term["message"].startswith("stopped early at step 10 of 40: 1 evaluation(s) in a row without the eval "
                                      "loss improving by more than 100 (best ")
    assert not [e for e in progress_lines(out) if e.get("step", 0) > 10]
    summary = json.loads((tmp_path / "out/training_summary.json").read_text())
    assert summary["steps"] == 10 and summary["totalSteps"] == 40 and summary["stoppedEarly"] == term["stoppedEarly"]
    sft, lora = summary["resolved"]["sftConfig"], summary["resolved"]["loraConfig"]
    assert sft["adam_beta2"] == 0.95 and sft["metric_for_best_model"] == "eval_loss"
    assert sft["greater_is_better"] is False and lora["layers_to_transform"] == [0]
    adapter_config = json.loads((tmp_path / "out/adapter/adapter_config.json").read_text())
    assert adapter_config["layers_to_transform"] == [0]

    # Another attempt into the same output (the pod died after the last checkpoint): it resumes from
    # checkpoint-10, saved at the stopping evaluation, and finishes there instead of training on.
    code, again = run_in_process(cfg, tmp_path / "b", monkeypatch)
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert again["resumedFromStep"] == 10 and again["step"] == 10 and again["stoppedEarly"]["step"] == 10
    assert not [e for e in progress_lines(out) if e.get("step", 0) > 10]


def test_an_unknown_extra_key_fails_the_pre_flight(tiny_model, tmp_path, monkeypatch, capsys):
    cfg = config(tiny_model, f"file://{tmp_path}/out", "http://unused", extra={"adam_epsilonn": "1e-6"})
    cfg.pop("storage")
    code, term = run_in_process(cfg, tmp_path, monkeypatch)
    assert code == 3, capsys.readouterr().out[-3000:]
    assert term["outcome"] == "invalid_input" and term["reason"] == "UnknownExtraSetting"
    assert "training.extra.adam_epsilonn" in term["message"] and "did you mean adam_epsilon?" in term["message"]
