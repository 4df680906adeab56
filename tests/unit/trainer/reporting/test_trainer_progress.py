"""Progress events, the rate limiter, the status sink (against a real HTTP server on loopback)."""

from __future__ import annotations

import io
import json

import pytest

from lft_api.contract import CheckpointRef, Metrics, Progress
from lft_trainer.reporting import progress
from lft_trainer.settings import Settings
from tests.support.clock import Clock
from tests.support.status_api import StatusApi


def test_rate_limiter_with_injected_clock():
    clock = Clock()
    lim = progress.RateLimiter(5.0, clock)
    assert lim.allow()  # first always passes
    clock.t = 4.9
    assert not lim.allow()
    assert lim.allow(force=True)  # forced passes and restarts the interval
    clock.t = 9.8
    assert not lim.allow()
    clock.t = 9.9
    assert lim.allow()


def test_min_interval_from_env(monkeypatch):
    monkeypatch.delenv("LFT_STATUS_MIN_INTERVAL_SECONDS", raising=False)
    assert Settings.from_environ().status_min_interval == 5.0
    monkeypatch.setenv("LFT_STATUS_MIN_INTERVAL_SECONDS", "0.5")
    assert Settings.from_environ().status_min_interval == 0.5
    monkeypatch.setenv("LFT_STATUS_MIN_INTERVAL_SECONDS", "soon")
    assert Settings.from_environ().status_min_interval == 5.0


def ev(kind: str, step: int, checkpoint: CheckpointRef | None = None, eta_seconds: int | None = None,
       **metrics) -> progress.ProgressEvent:
    return progress.ProgressEvent(kind, Progress.build(step, 100, eta_seconds=eta_seconds), Metrics(**metrics),
                                  checkpoint)


def test_status_sink_rate_limits_but_forces_eval_checkpoint_end():
    clock, bodies = Clock(), []
    sink = progress.StatusSink(bodies.append, min_interval=5.0, clock=clock)
    for t, e in [(0, ev("log", 1, loss=2.0)), (1, ev("log", 2)), (2, ev("log", 3)), (5.5, ev("log", 4)),
                 (6, ev("eval", 4, eval_loss=1.5)), (6.1, ev("log", 5)),
                 (7, ev("checkpoint", 5, checkpoint=CheckpointRef(step=5, uri="s3://b/r/checkpoints/checkpoint-5"))),
                 (7.5, ev("end", 6))]:
        clock.t = t
        sink.emit(e)
    assert [b["status"]["progress"]["step"] for b in bodies] == [1, 4, 4, 5, 6]
    assert sink.patches == 5
    body = bodies[2]["status"]
    assert body["metrics"]["evalLoss"] == 1.5 and body["progress"]["percent"] == 4.0
    assert bodies[3]["status"]["latestCheckpoint"] == {"step": 5, "uri": "s3://b/r/checkpoints/checkpoint-5"}
    assert set(bodies[0]["status"]) == {"progress", "metrics"}  # the trainer patches only its own fields


def test_failing_sink_never_raises(caplog):
    def broken(body):
        raise ConnectionRefusedError("api server down")

    sink = progress.StatusSink(broken, min_interval=0)
    reporter = progress.Reporter([sink, progress.StdoutSink(io.StringIO())], total_steps=10)
    for step in range(3):
        reporter.advanced(step, 10, None)
        reporter.step_logged(1.0, None, None)
    assert sink.failures == 3 and sink.patches == 0
    assert sum("status patch failed" in r.message for r in caplog.records) == 1  # logged once a minute


def test_event_json_fields():
    out = io.StringIO()
    reporter = progress.Reporter([progress.StdoutSink(out)])
    reporter.advanced(25, 100, 0.5, tokens_per_second=1234.56, eta_seconds=30)
    reporter.step_logged(1.23456789, 1e-4, 0.5)
    reporter.step_logged(float("nan"), None, None)
    j, nan = (json.loads(x) for x in out.getvalue().splitlines())
    assert j == {"event": "progress", "kind": "log", "step": 25, "totalSteps": 100, "epoch": 0.5, "percent": 25.0,
                 "loss": 1.2346, "evalLoss": None, "learningRate": 1e-4, "gradNorm": 0.5,
                 "tokensPerSecond": 1234.6, "etaSeconds": 30}
    assert nan["loss"] is None  # NaN is not JSON


def test_callback_turns_logs_into_events():
    from transformers import TrainerControl, TrainerState

    clock, out = Clock(100.0), io.StringIO()
    reporter = progress.Reporter([progress.StdoutSink(out)])
    cb = progress.make_callback(reporter, clock=clock)
    state = TrainerState(max_steps=40, global_step=10, num_input_tokens_seen=1000)  # resumed at step 10
    state.is_world_process_zero = True
    cb.on_train_begin(None, state, TrainerControl())
    clock.t, state.global_step, state.epoch, state.num_input_tokens_seen = 110.0, 20, 0.5, 6000
    cb.on_log(None, state, TrainerControl(), logs={"loss": 2.5, "learning_rate": 1e-3, "grad_norm": 0.7})
    clock.t, state.global_step = 115.0, 30
    cb.on_evaluate(None, state, TrainerControl(), metrics={"eval_loss": 2.0})
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [x["kind"] for x in lines] == ["log", "eval"]
    first = lines[0]
    assert (first["step"], first["totalSteps"], first["percent"], first["loss"]) == (20, 40, 50.0, 2.5)
    assert first["tokensPerSecond"] == 500.0  # 5000 tokens in 10 s since this process started
    assert first["etaSeconds"] == 20  # 20 steps left at 1 step/s
    assert first["learningRate"] == 1e-3 and first["gradNorm"] == 0.7
    assert lines[1]["evalLoss"] == 2.0 and lines[1]["step"] == 30
    assert "evalLossBefore" not in lines[1]  # an eval at step 30 is not the "before" eval

    other = TrainerState(max_steps=40, global_step=20)
    other.is_world_process_zero = False  # rank 1 reports nothing
    cb.on_log(None, other, TrainerControl(), logs={"loss": 9.0})
    assert len(out.getvalue().splitlines()) == 2


@pytest.fixture
def api_server():
    server = StatusApi()
    yield server
    server.stop()


def test_kube_status_client_patches_the_status_subresource(api_server, tmp_path):
    (tmp_path / "token").write_text("sa-token-123\n")
    client = progress.KubeStatusClient("ft1", "team-a", api_url=api_server.url, sa_dir=str(tmp_path), uid="uid-7")
    client.patch(ev("eval", 3, eval_loss=1.0).status_body())
    path, headers, body = api_server.seen[0]
    assert path == "/apis/finetune.dev/v1alpha1/namespaces/team-a/lorafinetunes/ft1/status?fieldManager=lft-trainer"
    assert body["status"]["trainerUid"] == "uid-7"  # the operator ignores trainer fields under another UID
    assert headers["Content-Type"] == "application/merge-patch+json"
    assert headers["Authorization"] == "Bearer sa-token-123"
    assert body["status"]["progress"]["step"] == 3 and body["status"]["metrics"]["evalLoss"] == 1.0


def test_make_reporter_adds_status_sink_only_with_name_and_namespace(monkeypatch, api_server):
    monkeypatch.setenv("LFT_KUBE_API_URL", api_server.url)
    monkeypatch.delenv("LFT_NAME", raising=False)
    assert [type(s).__name__ for s in progress.make_reporter(stream=io.StringIO()).sinks] == ["StdoutSink"]
    r = progress.make_reporter("ft1", "ns", stream=io.StringIO())
    assert [type(s).__name__ for s in r.sinks] == ["StdoutSink", "StatusSink"]
    r.finished(0, None)
    assert api_server.seen and api_server.seen[0][2]["status"]["progress"]["totalSteps"] == 0


def test_status_body_carries_the_printer_column_strings():
    body = ev("log", 40, loss=1.23456789, eta_seconds=200).status_body()
    prog = body["status"]["progress"]
    assert prog["display"] == "40/100 (40%)"  # the Progress column of kubectl get
    assert prog["eta"] == "3m20s"  # the ETA column
    assert prog["percent"] == 40.0 and prog["etaSeconds"] == 200
    assert body["status"]["metrics"]["loss"] == 1.2346  # the Loss column, 4 decimals


def test_checkpoint_health_goes_unhealthy_on_a_failed_upload_and_back_on_the_next(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    clock, bodies, out = Clock(), [], io.StringIO()
    sink = progress.StatusSink(bodies.append, min_interval=60.0, clock=clock)
    reporter = progress.Reporter([sink, progress.StdoutSink(out)], total_steps=30)
    reporter.advanced(10, 30, None)
    reporter.step_logged(2.0, None, None)  # the first patch
    reporter.checkpoint_uploaded(CheckpointRef(step=10, uri="s3://b/r/checkpoints/checkpoint-10"))
    reporter.checkpoint_failed(20, "StorageError: PUT refused with very-secret-value")
    reporter.checkpoint_failed(25, "StorageError: again")
    reporter.checkpoint_uploaded(CheckpointRef(step=30, uri="s3://b/r/checkpoints/checkpoint-30"))
    # Forced patches despite the 60 s rate limit.
    health = [b["status"].get("checkpointHealth") for b in bodies]
    assert health[0] is None and health[1]["healthy"] is True and health[1]["lastUploadedStep"] == 10
    failed = health[2]
    assert failed["healthy"] is False and failed["failedUploads"] == 1 and failed["lastUploadedStep"] == 10
    assert "checkpoint 20" in failed["message"] and "very-secret-value" not in failed["message"]
    assert health[3]["failedUploads"] == 2
    assert health[4] == {**health[4], "healthy": True, "failedUploads": 0, "lastUploadedStep": 30}
    assert "message" not in health[4]
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [x["kind"] for x in lines[2:4]] == ["checkpoint_failed", "checkpoint_failed"]
    assert lines[2]["checkpointHealth"]["healthy"] is False


def test_eval_at_step_zero_is_the_eval_before():
    out = io.StringIO()
    reporter = progress.Reporter([progress.StdoutSink(out)], total_steps=40)
    reporter.evaluated(3.5)
    reporter.advanced(20, 40, 0.5)
    reporter.evaluated(2.0)
    first, second = (json.loads(x) for x in out.getvalue().splitlines())
    assert first["evalLossBefore"] == 3.5 and first["totalSteps"] == 40
    assert second["evalLoss"] == 2.0 and second["evalLossBefore"] == 3.5
