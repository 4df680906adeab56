"""evaluation.samples: which rows, how each format splits into a prompt and a reference, the end metrics
(perplexity, eval loss change), the spec and the printer column. Pure; generation itself is tested end to end
in tests/integration/test_trainer_s3.py."""

from __future__ import annotations

import io
import json
import math

import pytest
from pydantic import ValidationError

from lft_api.contract import Artifacts, Metrics
from lft_api.resource import LoRAFineTuneSpec
from lft_api.spec import TrainerConfig
from lft_trainer.adapter import samples
from lft_trainer.reporting import history, progress
from lft_trainer.reporting.summary import RunFacts, build_summary
from tests.unit.trainer.reporting.test_trainer_summary import facts

MINIMAL = {"model": {"name": "m"}, "dataset": {"uri": "d"}, "output": {"uri": "o"}}


class CharTokenizer:
    """One token per character; a chat template of role-tagged turns."""

    def __call__(self, text, add_special_tokens=True, **kw):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids, **kw):
        return "".join(chr(i) for i in ids)

    def apply_chat_template(self, turns, tokenize=False, add_generation_prompt=False, tools=None):
        text = "".join(f"<tool {t['function']['name']}>" for t in tools or [])
        text += "".join(f"<{t['role']}>{t['content']}" for t in turns)
        return text + ("<assistant>" if add_generation_prompt else "")


def rows(n: int, key: str = "text") -> list[dict]:
    return [{key: f"row {i}"} for i in range(n)]


# -- which rows ---------------------------------------------------------------------------------
def test_the_first_eval_rows_are_held_out():
    picked, held_out = samples.pick_rows(rows(5, "e"), rows(50), 3)
    assert picked == [{"e": "row 0"}, {"e": "row 1"}, {"e": "row 2"}] and held_out is True
    assert samples.pick_rows(rows(2, "e"), rows(50), 3) == (rows(2, "e"), True)  # fewer eval rows than asked


def test_without_an_eval_split_the_last_train_rows_are_taken_and_not_held_out():
    for eval_rows in (None, []):
        assert samples.pick_rows(eval_rows, rows(10), 3) == (rows(10)[7:], False)
    assert samples.pick_rows(None, rows(2), 3) == (rows(2), False)


def test_zero_samples_pick_nothing():
    assert samples.pick_rows(rows(5), rows(5), 0)[0] == []


# -- prompt and reference per format ------------------------------------------------------------
def test_messages_prompt_is_the_turns_before_the_last_assistant_turn_with_the_generation_prompt():
    row = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"},
                        {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"},
                        {"role": "assistant", "content": "A2"}]}
    p = samples.to_prompt(row, CharTokenizer())
    assert p == samples.Prompt("<system>S<user>Q1<assistant>A1<user>Q2<assistant>", "A2", add_special_tokens=False)
    # A trailing user turn after the last answer is not part of the prompt.
    row["messages"].append({"role": "user", "content": "thanks"})
    assert samples.to_prompt(row, CharTokenizer()).reference == "A2"


def test_prompt_completion_and_text_rows():
    p = samples.to_prompt({"prompt": "2+2=", "completion": "4"}, CharTokenizer())
    assert p == samples.Prompt("2+2=", "4", add_special_tokens=True)
    t = samples.to_prompt({"text": "abcdefg"}, CharTokenizer())
    assert (t.prompt, t.reference) == ("abc", "defg")
    assert samples.split_text("a", CharTokenizer()) == ("a", "")  # at least one prompt token


def test_conversational_prompt_completion_and_tools_reach_the_prompt():
    row = {"prompt": [{"role": "user", "content": "Q"}],
           "completion": [{"role": "assistant", "content": "A"}],
           "tools": [{"type": "function", "function": {"name": "f"}}]}
    p = samples.to_prompt(row, CharTokenizer())
    assert p == samples.Prompt("<tool f><user>Q<assistant>", "A", add_special_tokens=False)


def test_summary_rows_are_shortened():
    row = samples.shortened({"prompt": "x" * 600, "reference": "ok"}, limit=10)
    assert row == {"prompt": "x" * 10 + " [truncated]", "reference": "ok"}


def test_summary_carries_the_samples_block_only_when_sampled():
    config = TrainerConfig.model_validate(MINIMAL)
    block = {"heldOut": True, "count": 1, "rows": [{"prompt": "p"}]}
    assert build_summary(config, facts(samples=block))["samples"] == block
    assert "samples" not in build_summary(config, facts())
    s = build_summary(config, facts(eval_loss_before=3.0, eval_loss_after=1.0))
    assert s["metrics"]["perplexityAfter"] == pytest.approx(math.e)
    assert RunFacts.__dataclass_fields__["samples"].default is None


# -- perplexity and the eval loss change --------------------------------------------------------
def test_perplexity_and_eval_loss_change():
    assert history.perplexity(0.0) == 1.0 and history.perplexity(2.0) == pytest.approx(math.exp(2.0))
    assert history.perplexity(None) is None and history.perplexity(float("nan")) is None
    assert history.perplexity(1000.0) is None  # overflow
    assert history.eval_loss_change(3.0, 1.25) == -1.75
    assert history.eval_loss_change(None, 1.0) is None and history.eval_loss_change(1.0, None) is None


def test_the_end_event_carries_perplexity_and_the_change_rounded_to_four_decimals():
    out = io.StringIO()
    reporter = progress.Reporter([progress.StdoutSink(out)], total_steps=10)
    reporter.evaluated(3.123456)  # step 0: the eval before
    reporter.finished(10, 1.0, eval_loss_before=3.1234567)
    end = json.loads(out.getvalue().splitlines()[-1])
    assert end["kind"] == "end" and end["evalLoss"] == 1.0 and end["evalLossBefore"] == 3.1235
    assert end["perplexity"] == pytest.approx(2.7183) and end["evalLossChange"] == -2.1235
    body = reporter.event("end").status_body()["status"]["metrics"]
    assert body["evalLossChange"] == -2.1235 and body["perplexity"] == 2.7183
    # Without an explicit "before", the one in the metrics counts; without any, no change.
    reporter.finished(10, 2.0)
    assert reporter.metrics.eval_loss_change == -1.1235
    alone = progress.Reporter([], total_steps=1)
    alone.finished(1, None)
    assert alone.metrics.perplexity is None and alone.metrics.eval_loss_change is None
    assert Metrics(perplexity=12.345678, eval_loss_change=-0.123456).to_wire() == {
        "perplexity": 12.3457, "evalLossChange": -0.1235}


# -- the spec, the result hash and the artifacts -----------------------------------------------
def test_evaluation_spec_defaults_limits_and_the_cr_spec_accepts_it():
    c = TrainerConfig.model_validate(MINIMAL)
    assert (c.evaluation.samples, c.evaluation.max_new_tokens) == (3, 64)
    assert "evaluation" in TrainerConfig.trainer_fields()
    for bad in ({"samples": -1}, {"samples": 33}, {"maxNewTokens": 0}, {"other": 1}):
        with pytest.raises(ValidationError):
            TrainerConfig.model_validate({**MINIMAL, "evaluation": bad})
    spec = LoRAFineTuneSpec.model_validate({**MINIMAL, "evaluation": {"samples": 0, "maxNewTokens": 16}})
    assert spec.trainer_config().to_wire()["evaluation"] == {"samples": 0, "maxNewTokens": 16}


def test_result_hash_ignores_evaluation():
    # The same hash as before the evaluation section existed (see test_result_hash_of_legacy_specs_is_unchanged).
    legacy = {"model": {"name": "microsoft/Phi-3-mini-4k-instruct"}, "dataset": {"uri": "s3://data/chat.jsonl"},
              "output": {"uri": "s3://out/run"}}
    assert TrainerConfig.model_validate(legacy).result_hash() == "2b1812f8235e2850"
    other = {**legacy, "evaluation": {"samples": 0, "maxNewTokens": 512}}
    assert TrainerConfig.model_validate(other).result_hash() == "2b1812f8235e2850"


def test_samples_artifact():
    assert Artifacts(samples="s3://b/r/samples.jsonl").to_wire() == {"samples": "s3://b/r/samples.jsonl"}
