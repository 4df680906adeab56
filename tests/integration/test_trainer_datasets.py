"""The trainer end to end on datasets as users have them: a function-calling dataset (tools, tool calls, tool
turns; a chat template that renders them, assistant-only loss) and a ShareGPT-shaped file (column mapping).
The tiny model trains a few steps on the CPU; the output is a local directory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.support.tools import ROOT
from tests.support.trainer_run import config, run_in_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOOLS = ROOT / "examples/data/tools_tiny.jsonl"
SHAREGPT = ROOT / "examples/data/sharegpt_tiny.jsonl"


def _run(tiny_model: Path, tmp_path: Path, monkeypatch, dataset: Path, model: dict | None = None,
         columns: dict | None = None, **training) -> tuple[int, dict, Path]:
    out = tmp_path / "out"
    cfg = config(tiny_model, str(out), None, dataset=str(dataset), maxSteps=6, evalSteps=None, **training)
    cfg["model"].update(model or {})
    if columns:
        cfg["dataset"]["columns"] = columns
    code, term = run_in_process(cfg, tmp_path, monkeypatch)
    return code, term, out


def test_function_calling_dataset_trains_with_its_tool_calls(tiny_model, tmp_path, monkeypatch):
    code, term, out = _run(tiny_model, tmp_path, monkeypatch, TOOLS, model={"chatTemplate": "qwen2_5"},
                           assistantOnlyLoss=True, maxLength=2048)
    assert code == 0, term
    summary = json.loads((out / "training_summary.json").read_text())
    ds = summary["dataset"]
    assert ds["rowsPerFormat"] == {"train": {"messages": 120}}
    assert ds["files"] == [{"file": str(TOOLS), "sha256": hashlib.sha256(TOOLS.read_bytes()).hexdigest(),
                            "bytes": TOOLS.stat().st_size}]
    assert ds["chatTemplate"]["source"] == "trl:qwen2_5" and ds["chatTemplate"]["trainingVariant"] is True
    train = ds["train"]
    assert train["rows"] == 120 and summary["trainRows"] == 108 and train["truncated"]["rows"] == 0
    assert train["dropped"]["rows"] == 0 and 0 < train["tokens"]["min"] <= train["tokens"]["p95"] <= 2048
    # The adapter carries the template it was trained with (the one given, not the training variant).
    import trl

    given = (Path(trl.__file__).parent / "chat_templates/qwen2_5.jinja").read_text()
    assert (out / "adapter/chat_template.jinja").read_text() == given


def test_a_template_that_cannot_render_tool_calls_is_refused_before_the_model_loads(tiny_model, tmp_path,
                                                                                    monkeypatch):
    code, term, _ = _run(tiny_model, tmp_path, monkeypatch, TOOLS)  # the tiny model's own template: Phi-3's
    assert code == 3 and term["outcome"] == "invalid_input", term
    assert term["message"].startswith(f"{TOOLS} row 1: the chat template does not render messages[1].tool_calls[0] "
                                      "(function get_capital)")


def test_sharegpt_file_trains_through_the_column_mapping(tiny_model, tmp_path, monkeypatch):
    code, term, out = _run(tiny_model, tmp_path, monkeypatch, SHAREGPT, columns={"preset": "sharegpt"})
    assert code == 0, term
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["dataset"]["rowsPerFormat"] == {"train": {"messages": 120}}
    assert summary["dataset"]["chatTemplate"]["source"] == "tokenizer"
    assert summary["trainRows"] + summary["evalRows"] == 120 and summary["steps"] == 6


def test_a_mixture_of_two_sources_on_s3_trains_by_weight(s3_bucket, tiny_model, tmp_path, monkeypatch):
    """dataset.mixture: a file and a directory in the bucket, each with its own columns, sampled 3:1."""
    chat = ROOT / "examples/data/chat_tiny.jsonl"
    s3_bucket.put_bytes("data/chat.jsonl", chat.read_bytes())
    s3_bucket.put_bytes("data/sharegpt/train.jsonl", SHAREGPT.read_bytes())
    out = tmp_path / "out"
    cfg = config(tiny_model, str(out), s3_bucket.endpoint_url, maxSteps=6, evalSteps=None)
    del cfg["dataset"]["uri"]
    cfg["dataset"]["mixture"] = [
        {"uri": s3_bucket.uri("data/chat.jsonl"), "weight": 3},
        {"uri": s3_bucket.uri("data/sharegpt/"), "weight": 1, "columns": {"preset": "sharegpt"}},
    ]
    code, term = run_in_process(cfg, tmp_path, monkeypatch)
    assert code == 0, term
    ds = json.loads((out / "training_summary.json").read_text())["dataset"]
    summary = json.loads((out / "training_summary.json").read_text())
    assert ds["rowsChecked"] == {"train": 600} and ds["rowsPerFormat"] == {"train": {"messages": 600}}
    first, second = ds["mixture"]
    assert (first["index"], first["uri"], first["weight"]) == (0, s3_bucket.uri("data/chat.jsonl"), 3)
    assert (second["index"], second["uri"], second["weight"]) == (1, s3_bucket.uri("data/sharegpt/"), 1)
    assert first["rowsChecked"] == {"train": 480} and second["rowsChecked"] == {"train": 120}
    assert [f["file"] for f in ds["files"]] == [s3_bucket.uri("data/chat.jsonl"),
                                                 s3_bucket.uri("data/sharegpt/train.jsonl")]
    # evalFraction 0.1 held out of each source; the rest (every row, at most) drawn 3:1.
    for source in (first, second):
        assert source["rowsHeldOut"] == round(source["rows"] * 0.1)
    left = sum(s["rows"] - s["rowsHeldOut"] for s in (first, second))
    assert first["rowsUsed"] + second["rowsUsed"] == summary["trainRows"] == left
    assert abs(first["rowsUsed"] - 3 * second["rowsUsed"]) <= 3 and second["repeated"] is True
    assert summary["evalRows"] == first["rowsHeldOut"] + second["rowsHeldOut"]


def test_a_bad_row_in_the_second_source_on_s3_is_refused_naming_it(s3_bucket, tiny_model, tmp_path, monkeypatch):
    s3_bucket.put_bytes("data/good.jsonl", SHAREGPT.read_bytes())
    s3_bucket.put_bytes("data/bad.jsonl", (ROOT / "examples/data/bad_rows.jsonl").read_bytes())
    cfg = config(tiny_model, str(tmp_path / "out"), s3_bucket.endpoint_url, maxSteps=6, evalSteps=None)
    del cfg["dataset"]["uri"]
    cfg["dataset"]["mixture"] = [{"uri": s3_bucket.uri("data/good.jsonl"), "weight": 1,
                                  "columns": {"preset": "sharegpt"}},
                                 {"uri": s3_bucket.uri("data/bad.jsonl"), "weight": 1}]
    code, term = run_in_process(cfg, tmp_path, monkeypatch)
    assert code == 3 and term["outcome"] == "invalid_input", term
    bad = s3_bucket.uri("data/bad.jsonl")
    assert term["message"].startswith(f"dataset.mixture[1] ({bad}): {bad} row 17: "), term["message"]
