"""dataset.mixture in the trainer: each source checked on its own (errors name the source), its own column mapping,
and the training set drawn by weight, deterministically (data/mixture.py, preflight.check_sources, trainset.build)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lft_api.spec import TrainerConfig
from lft_trainer.data import mixture, trainset
from lft_trainer.errors import InvalidInput
from lft_trainer.run import preflight
from tests.support.tools import ROOT

CHAT = ROOT / "examples/data/chat_tiny.jsonl"  # 480 messages rows
PHI3 = "phi3"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from transformers import AutoTokenizer

    from lft_trainer.model import tiny_model

    return AutoTokenizer.from_pretrained(tiny_model.build(tmp_path_factory.mktemp("tiny")))


def alpaca(path: Path, n: int, bad: dict[int, dict] | None = None) -> Path:
    """n Alpaca-shaped rows (instruction, input, output); bad: row number (1-based) -> row."""
    rows = [{"instruction": f"Say {i}.", "input": "", "output": f"{i}"} for i in range(n)]
    for number, row in (bad or {}).items():
        rows[number - 1] = row
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config(mix: list[dict], **dataset) -> TrainerConfig:
    return TrainerConfig.model_validate({"model": {"name": "m", "chatTemplate": PHI3},
                                         "dataset": {"mixture": mix, "evalFraction": 0, **dataset},
                                         "output": {"uri": "o"}, "training": {"seed": 7}})


def build(c: TrainerConfig, tmp_path: Path, tok, rank: int = 0) -> trainset.TrainData:
    _, report = preflight.check_sources(c.dataset, None, tmp_path / f"work{rank}")
    return trainset.build(c, report, tok, tmp_path / f"work{rank}", rank)


def from_source(td: trainset.TrainData, rows) -> Counter:
    return Counter("chat" if f == str(CHAT) else "alpaca" for f in rows["file"])


# --- the plan (pure) ------------------------------------------------------------------------------
def test_shares_follow_the_weights_and_add_up():
    assert mixture.shares([100, 100], [3, 1], 200) == [150, 50]
    assert mixture.shares([5, 5, 5], [1, 1, 1], 10) == [4, 3, 3]  # largest remainder, ties to the first
    assert mixture.shares([0, 10], [3, 1], 10) == [0, 10]  # a source without rows gets none
    assert sum(mixture.shares([7, 3, 11], [0.2, 0.5, 0.3], 21)) == 21


def test_plan_gives_the_weights_proportions_exactly_and_is_deterministic():
    of_source = np.array([0] * 60 + [1] * 300)
    p = mixture.plan(of_source, [3, 1], seed=1)
    chosen = of_source[p.train]
    assert len(p.train) == 360 and Counter(chosen.tolist()) == {0: 270, 1: 90}  # 3:1 of the 360 rows
    # Source 0 (60 rows, share 270) repeats every row 4 or 5 times; source 1 is sampled without repetition.
    repeats = Counter(p.train[chosen == 0].tolist())
    assert set(repeats) == set(range(60)) and set(repeats.values()) == {4, 5}
    assert len(set(p.train[chosen == 1].tolist())) == 90
    assert p.sources == [{"rows": 60, "rowsHeldOut": 0, "rowsUsed": 270, "repeated": True},
                         {"rows": 300, "rowsHeldOut": 0, "rowsUsed": 90, "repeated": False}]
    again = mixture.plan(of_source, [3, 1], seed=1)
    assert np.array_equal(again.train, p.train)  # every rank, node and resumed attempt: the same order
    other = mixture.plan(of_source, [3, 1], seed=2)
    assert not np.array_equal(other.train, p.train) and Counter(of_source[other.train].tolist()) == {0: 270, 1: 90}
    # The sources are shuffled together, not one after the other.
    assert set(chosen[:40].tolist()) == {0, 1}


def test_plan_holds_eval_out_of_each_source_and_max_samples_bounds_the_total():
    of_source = np.array([0] * 100 + [1] * 20)
    p = mixture.plan(of_source, [1, 1], seed=3, eval_fraction=0.1, max_samples=50)
    held = of_source[p.eval]
    assert Counter(held.tolist()) == {0: 10, 1: 2}
    assert not set(p.eval.tolist()) & set(p.train.tolist())  # held-out rows never train, even repeated
    assert Counter(of_source[p.train].tolist()) == {0: 25, 1: 25}
    assert [s["rowsHeldOut"] for s in p.sources] == [10, 2]


# --- pre-flight: each source on its own -------------------------------------------------------------
def test_preflight_checks_each_source_with_its_own_columns(tmp_path):
    extra = alpaca(tmp_path / "extra.jsonl", 40)
    c = config([{"uri": str(CHAT), "weight": 3}, {"uri": str(extra), "weight": 1, "columns": {"preset": "alpaca"}}])
    sources, report = preflight.check_sources(c.dataset, None, tmp_path / "work")
    assert [s.uri for s in sources] == [str(CHAT), str(extra)]
    summary = report.summary()
    assert summary["rowsChecked"] == {"train": 520}
    assert summary["rowsPerFormat"] == {"train": {"messages": 480, "prompt-completion:standard": 40}}
    assert [(m["index"], m["uri"], m["weight"], m["rowsChecked"]) for m in summary["mixture"]] == [
        (0, str(CHAT), 3, {"train": 480}), (1, str(extra), 1, {"train": 40})]
    # Without the mapping the Alpaca source is refused, naming it.
    c = config([{"uri": str(CHAT), "weight": 3}, {"uri": str(extra), "weight": 1}])
    with pytest.raises(InvalidInput, match=r"^dataset\.mixture\[1\] \(.*extra\.jsonl\): .*row 1: cannot detect"):
        preflight.check_sources(c.dataset, None, tmp_path / "work2")


def test_a_bad_row_of_the_second_source_is_refused_naming_the_source_and_the_row(tmp_path):
    extra = alpaca(tmp_path / "extra.jsonl", 30, bad={17: {"instruction": "Say.", "input": "", "output": 5}})
    c = config([{"uri": str(CHAT), "weight": 3}, {"uri": str(extra), "weight": 1, "columns": {"preset": "alpaca"}}])
    with pytest.raises(InvalidInput) as ei:
        preflight.check_sources(c.dataset, None, tmp_path / "work")
    assert ei.value.message.startswith(f"dataset.mixture[1] ({extra}): {extra} row 17: output")
    assert (ei.value.file, ei.value.row) == (str(extra), 17)


def test_a_missing_source_names_its_field(tmp_path):
    c = config([{"uri": str(CHAT), "weight": 1}, {"uri": str(tmp_path / "nope.jsonl"), "weight": 1}])
    with pytest.raises(InvalidInput) as ei:
        preflight.check_sources(c.dataset, None, tmp_path / "work")
    assert ei.value.field == "dataset.mixture[1].uri" and ei.value.message.startswith("dataset.mixture[1] (")
    assert "does not exist" in ei.value.message


def test_source_field_names_what_the_user_set():
    c = config([{"uri": "a", "weight": 1}, {"uri": "b", "weight": 1, "format": "text"}])
    first, second = c.dataset.mixture
    assert mixture.source_field("dataset.format", 1, second) == "dataset.mixture[1].format"
    assert mixture.source_field("dataset.format", 0, first) == "dataset.format"  # the dataset's own applied
    assert mixture.source_field("dataset.uri", 0, first) == "dataset.mixture[0].uri"
    assert mixture.source_field("messages[1].role", 0, first) == "messages[1].role"
    assert mixture.label(2, "s3://user:secret@bucket/x.jsonl") == "dataset.mixture[2] (s3://***@bucket/x.jsonl)"


# --- the training set -------------------------------------------------------------------------------
def test_training_set_follows_the_weights_and_is_the_same_on_every_rank(tmp_path, tok):
    extra = alpaca(tmp_path / "extra.jsonl", 120)
    c = config([{"uri": str(CHAT), "weight": 1}, {"uri": str(extra), "weight": 3, "columns": {"preset": "alpaca"}}],
               evalFraction=0.05)
    td = build(c, tmp_path, tok)
    # 456 + 114 rows left after the hold-out (5% of each source): 570 examples, 1:3.
    assert from_source(td, td.train_rows) == {"chat": 143, "alpaca": 427}
    assert from_source(td, td.eval_rows) == {"chat": 24, "alpaca": 6}
    assert [(m["index"], m["rows"], m["rowsHeldOut"], m["rowsUsed"], m["repeated"]) for m in td.mixture] == [
        (0, 480, 24, 143, False), (1, 120, 6, 427, True)]
    wire = td.summary(c.training.max_length)
    assert wire["mixture"][1]["uri"] == str(extra) and wire["mixture"][1]["weight"] == 3
    assert wire["mixture"][1]["rowsChecked"] == {"train": 120} and wire["train"]["rows"] == 600
    other = build(c, tmp_path, tok, rank=1)  # another rank (or a resumed attempt) computes the same set
    assert list(other.train_rows["line"]) == list(td.train_rows["line"])
    assert list(other.train_rows["file"]) == list(td.train_rows["file"])
    assert list(other.train["input_ids"]) == list(td.train["input_ids"])


def test_a_row_the_template_cannot_render_names_its_source(tmp_path, tok):
    tools = tmp_path / "tools.jsonl"
    tools.write_text((ROOT / "examples/data/tools_tiny.jsonl").read_text())
    c = config([{"uri": str(CHAT), "weight": 1}, {"uri": str(tools), "weight": 1}])
    with pytest.raises(InvalidInput) as ei:
        build(c, tmp_path, tok)  # Phi-3's template leaves tool calls out
    assert ei.value.message.startswith(f"dataset.mixture[1] ({tools}): {tools} row 1: the chat template does not render")
