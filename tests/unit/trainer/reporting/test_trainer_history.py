"""metrics.jsonl rows from the HF log history, loss.png, their upload (local storage) and status.artifacts."""

from __future__ import annotations

import io
import json
import struct
import sys
import threading
from pathlib import Path

import pytest

from lft_api.contract import Artifacts, status_patch
from lft_trainer.reporting import artifacts, history, loss_plot, progress
from lft_trainer.storage.store import Storage

# What the HF Trainer logs (loggingSteps 2, evalSteps 4, then the train() summary entry and a final evaluate()).
LOG_HISTORY = [
    {"loss": 3.2, "grad_norm": 1.5, "learning_rate": 0.002, "epoch": 0.05, "step": 1, "num_input_tokens_seen": 500},
    {"loss": 2.9, "grad_norm": 1.2, "learning_rate": 0.0019, "epoch": 0.1, "step": 2, "num_input_tokens_seen": 1000},
    {"loss": 2.5, "grad_norm": 1.0, "learning_rate": 0.0015, "epoch": 0.2, "step": 4, "num_input_tokens_seen": 2000},
    {"eval_loss": 2.6, "eval_runtime": 0.3, "epoch": 0.2, "step": 4, "num_input_tokens_seen": 2000},
    {"train_runtime": 4.0, "train_loss": 2.8, "epoch": 0.2, "step": 4},
]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_one_row_per_logged_step_with_the_eval_merged_into_its_step():
    rows = history.metrics_rows(LOG_HISTORY, eval_before=3.4)
    assert [r["step"] for r in rows] == [0, 1, 2, 4]
    assert all(tuple(r) == history.FIELDS for r in rows)
    assert rows[0] == {"step": 0, "epoch": 0.0, "loss": None, "learningRate": None, "gradNorm": None,
                       "tokensSeen": 0, "evalLoss": 3.4}
    assert rows[1] == {"step": 1, "epoch": 0.05, "loss": 3.2, "learningRate": 0.002, "gradNorm": 1.5,
                       "tokensSeen": 500, "evalLoss": None}
    assert rows[3]["loss"] == 2.5 and rows[3]["evalLoss"] == 2.6 and rows[3]["tokensSeen"] == 2000


def test_eval_after_fills_the_last_step_and_an_eval_alone_makes_its_own_row():
    rows = history.metrics_rows(LOG_HISTORY[:2], eval_after=2.4, last_step=3)
    assert [r["step"] for r in rows] == [1, 2, 3]  # no eval before: no row 0
    assert rows[-1]["evalLoss"] == 2.4 and rows[-1]["loss"] is None
    rows = history.metrics_rows(LOG_HISTORY, eval_after=9.9, last_step=4)
    assert rows[-1]["evalLoss"] == 2.6  # the logged evaluation of that step is kept


def test_non_finite_values_are_null_and_the_jsonl_is_one_object_a_line():
    rows = history.metrics_rows([{"loss": float("nan"), "grad_norm": float("inf"), "learning_rate": 1e-3,
                                  "step": 1}])
    assert rows[0]["loss"] is None and rows[0]["gradNorm"] is None and rows[0]["learningRate"] == 1e-3
    lines = history.to_jsonl(rows + rows).decode().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["step"] == 1
    assert history.metrics_rows([]) == [] and history.to_jsonl([]) == b""


@pytest.mark.parametrize("rows", [
    history.metrics_rows(LOG_HISTORY, eval_before=3.4, eval_after=2.4, last_step=4),
    history.metrics_rows(LOG_HISTORY[:2]),  # no evaluation
    history.metrics_rows(LOG_HISTORY[:1]),  # a single step
    history.metrics_rows([], eval_before=3.4),  # only the eval before
    [],
])
def test_loss_png_is_a_valid_picture(rows, tmp_path):
    pytest.importorskip("matplotlib")
    path = loss_plot.plot_loss(rows, tmp_path / "loss.png", title="team/ft", final=True)
    width, height = png_size(path)
    assert (width, height) == (800, 500) and 5_000 < path.stat().st_size < 500_000


def test_without_matplotlib_the_picture_is_skipped_and_metrics_still_written(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setattr(artifacts, "_unavailable_logged", False)
    out = Storage(str(tmp_path / "out"))
    rows = history.metrics_rows(LOG_HISTORY, eval_before=3.4)
    for _ in range(2):
        written = artifacts.write_history(out, tmp_path / "work", rows)
    assert written.plot_skipped == "matplotlib is not installed"
    assert written.artifacts == Artifacts(metrics=out.uri("metrics.jsonl"))
    assert (tmp_path / "out/metrics.jsonl").read_bytes() == history.to_jsonl(rows)
    assert not (tmp_path / "out/loss.png").exists()
    assert caplog.text.count("loss.png skipped") == 1  # logged once


def test_write_history_uploads_both_to_the_output_root(tmp_path):
    pytest.importorskip("matplotlib")
    out = Storage(str(tmp_path / "out"))
    written = artifacts.write_history(out, tmp_path / "work", history.metrics_rows(LOG_HISTORY, eval_before=3.4))
    assert written.plot_skipped is None
    assert written.artifacts == Artifacts(metrics=out.uri("metrics.jsonl"), loss_plot=out.uri("loss.png"))
    assert len((tmp_path / "out/metrics.jsonl").read_text().splitlines()) == 4
    png_size(tmp_path / "out/loss.png")


class FailingStorage:
    def __init__(self):
        self.calls = 0

    def upload_file(self, local, rel):
        self.calls += 1
        raise OSError("bucket gone")

    def uri(self, *parts):
        return "s3://b/r/" + "/".join(parts)


def test_background_refreshes_never_raise_and_log_at_most_once_a_minute(tmp_path, caplog):
    storage = FailingStorage()
    writer = artifacts.HistoryWriter(storage, tmp_path, clock=lambda: 0.0)
    for i in range(3):
        writer.refresh(LOG_HISTORY, 3.4)
        for _ in range(500):
            if writer.failures > i:
                break
            threading.Event().wait(0.01)
    assert writer.close(timeout=10)
    assert writer.failures == 3 and caplog.text.count("training goes on") == 1
    writer.refresh(LOG_HISTORY, 3.4)  # after close: ignored


def test_background_refresh_reports_the_artifacts_and_finish_writes_the_final_history(tmp_path):
    out, seen = Storage(str(tmp_path / "out")), []
    writer = artifacts.HistoryWriter(out, tmp_path / "work", on_written=seen.append)
    writer.refresh(LOG_HISTORY[:2], 3.4)
    written = writer.finish(LOG_HISTORY, 3.4, 2.4, last_step=4)
    assert writer.writes == 1 and seen and seen[0].metrics == out.uri("metrics.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "out/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 4] and written.artifacts.metrics == out.uri("metrics.jsonl")


def test_artifacts_are_reported_when_new_on_stdout_and_in_the_status_patch():
    stream, bodies = io.StringIO(), []
    reporter = progress.Reporter([progress.StdoutSink(stream), progress.StatusSink(bodies.append, 60.0)])
    first = Artifacts(metrics="s3://b/r/metrics.jsonl", loss_plot="s3://b/r/loss.png")
    reporter.artifacts_written(first)
    reporter.artifacts_written(first)  # nothing new: no event
    reporter.artifacts_written(Artifacts(adapter="s3://b/r/adapter", summary="s3://b/r/training_summary.json"))
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["kind"] for e in lines] == ["artifacts", "artifacts"]
    assert lines[-1]["artifacts"] == {"metrics": "s3://b/r/metrics.jsonl", "lossPlot": "s3://b/r/loss.png",
                                      "adapter": "s3://b/r/adapter", "summary": "s3://b/r/training_summary.json"}
    assert len(bodies) == 2 and bodies[-1]["status"]["artifacts"] == lines[-1]["artifacts"]  # forced
    reporter.step_logged(1.0, 1e-3, 0.5)
    assert "artifacts" not in json.loads(stream.getvalue().splitlines()[-1])  # log lines stay small
    assert status_patch(artifacts=first) == {"status": {"artifacts": first.to_wire()}}
