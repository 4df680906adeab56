"""training.reportTo with real trackers: the trainer (in this process, tiny Phi-3, real S3 server) writes
TensorBoard event files that are read back from the bucket, logs to a real `mlflow server` (sqlite backend) read
back through its REST API, and writes W&B offline run files whose history is decoded. Secrets never leak.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.tracking import MlflowServer, isolate_tracking_env, read_scalars, read_wandb_history
from tests.support.trainer_run import config, progress_lines, run_in_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS, LOGGING = 20, 5


def _train(cfg: dict, tmp_path: Path, monkeypatch, capsys) -> tuple[dict, str]:
    isolate_tracking_env(monkeypatch)
    code, term = run_in_process(cfg, tmp_path, monkeypatch)
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    for line in out.splitlines():  # stdout stays JSON lines only: no tracker writes its console there
        json.loads(line)
    return term, out


def _logged_losses(out: str) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in progress_lines(out) if e["kind"] == "log" and e.get("loss") is not None}


def _download(s3_bucket, prefix: str, dest: Path) -> Path:
    for key in s3_bucket.keys(prefix):
        path = dest / key[len(prefix):]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(s3_bucket.get_bytes(key))
    return dest


def test_tensorboard_event_files_in_the_output(s3_bucket, tiny_model, tmp_path, monkeypatch, capsys):
    cfg = config(tiny_model, s3_bucket.uri("run"), s3_bucket.endpoint_url, maxSteps=STEPS, loggingSteps=LOGGING,
                 evalSteps=10, reportTo=["tensorboard"])
    cfg["evaluation"] = {"samples": 0}
    term, out = _train(cfg, tmp_path, monkeypatch, capsys)

    # The event files came to the bucket (not only the pod's disk), and they hold the loss at each logged step.
    events = _download(s3_bucket, "run/tensorboard/", tmp_path / "tb")
    scalars = read_scalars(events)
    losses = _logged_losses(out)
    assert set(losses) >= {5, 10, 15, 20}
    assert set(scalars["train/loss"]) == set(losses)
    for step, loss in losses.items():
        assert scalars["train/loss"][step] == pytest.approx(loss, rel=1e-3), step
    assert set(scalars["eval/loss"]) >= {0, 10, 20}  # before training, at evalSteps, at the end
    assert "train/learning_rate" in scalars

    summary = json.loads(s3_bucket.get_bytes("run/training_summary.json"))
    assert summary["artifacts"]["tensorboard"] == f"s3://{s3_bucket.name}/run/tensorboard"
    artifact_events = [e for e in progress_lines(out) if e.get("artifacts", {}).get("tensorboard")]
    assert artifact_events, "status.artifacts.tensorboard was never reported"


def test_mlflow_run_params_and_loss_history(s3_bucket, tiny_model, tmp_path, monkeypatch, capsys, fake_secret):
    server = MlflowServer(tmp_path / "mlflow").start()
    try:
        cfg = config(tiny_model, s3_bucket.uri("run"), s3_bucket.endpoint_url, maxSteps=STEPS,
                     loggingSteps=LOGGING, evalSteps=10, reportTo=["mlflow"],
                     mlflow={"trackingUri": server.url, "experimentName": "lft-it"})
        cfg["evaluation"] = {"samples": 0}
        monkeypatch.setenv("LFT_NAME", "ft-mlflow")
        monkeypatch.setenv("LFT_NAMESPACE", "team")
        isolate_tracking_env(monkeypatch)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", fake_secret)  # the server takes none; it must not leak
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "lft")
        code, term = run_in_process(cfg, tmp_path, monkeypatch)
        out = capsys.readouterr().out
        assert code == 0, out[-3000:]

        runs = server.runs("lft-it")
        assert len(runs) == 1, [r["info"] for r in runs]  # the eval after training went to the same run
        run = runs[0]
        assert run["info"]["status"] == "FINISHED" and run["info"]["run_name"] == "team/ft-mlflow"
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert tags["lft.name"] == "ft-mlflow" and tags["lft.namespace"] == "team" and "lft.resultHash" in tags
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert params["learning_rate"] == "0.003" and params["max_steps"] == str(STEPS)
        assert params["per_device_train_batch_size"] == "8"

        history = server.metric_history(run["info"]["run_id"], "loss")
        losses = _logged_losses(out)
        assert set(history) == set(losses) and len(history) >= 4
        for step, loss in losses.items():
            assert history[step] == pytest.approx(loss, rel=1e-3), step
        assert set(server.metric_history(run["info"]["run_id"], "eval_loss")) >= {0, 10, 20}

        link = json.loads(s3_bucket.get_bytes("run/training_summary.json"))["artifacts"]["mlflowRun"]
        assert link == f"{server.url}/#/experiments/{run['info']['experiment_id']}/runs/{run['info']['run_id']}"
        assert fake_secret not in out and fake_secret not in json.dumps(term)
    finally:
        server.stop()


def test_mlflow_registers_the_adapter_as_a_model_version(s3_bucket, tiny_model, tmp_path, monkeypatch, capsys):
    """training.mlflow.registeredModelName: each run's adapter becomes the next version of the registered model,
    made from the run's own copy of the adapter (runs:/<run id>/adapter), tagged with the base model; the run
    holds the metrics. The second run finds the registered model there and adds version 2."""
    server = MlflowServer(tmp_path / "mlflow").start()
    try:
        made = []
        for n, name in enumerate(["ft-registry", "ft-registry-2"], start=1):
            cfg = config(tiny_model, s3_bucket.uri(name), s3_bucket.endpoint_url, maxSteps=10, loggingSteps=5,
                         evalSteps=10, reportTo=["mlflow"],
                         mlflow={"trackingUri": server.url, "experimentName": "lft-it-registry",
                                 "registeredModelName": "lft-it-adapter"})
            cfg["evaluation"] = {"samples": 0}
            monkeypatch.setenv("LFT_NAME", name)
            monkeypatch.setenv("LFT_NAMESPACE", "team")
            isolate_tracking_env(monkeypatch)
            (tmp_path / name).mkdir()
            code, term = run_in_process(cfg, tmp_path / name, monkeypatch)
            out = capsys.readouterr().out
            assert code == 0, out[-3000:]
            (run,) = [r for r in server.runs("lft-it-registry") if r["info"]["run_name"] == f"team/{name}"]
            run_id = run["info"]["run_id"]
            assert term["modelRegistration"] == {"name": "lft-it-adapter", "source": f"runs:/{run_id}/adapter",
                                                 "version": str(n)}, term
            made.append(run_id)
        versions = server.api("model-versions/search", filter="name='lft-it-adapter'")["model_versions"]
        by_version = {v["version"]: v for v in versions}
        assert sorted(by_version) == ["1", "2"], versions
        for version, run_id in zip(["1", "2"], made, strict=True):
            v = by_version[version]
            assert v["source"] == f"runs:/{run_id}/adapter" and v["run_id"] == run_id
            assert v["status"] == "READY"
            tags = {t["key"]: t["value"] for t in v.get("tags", [])}
            assert tags["base_model"] == str(tiny_model) and tags["lft.namespace"] == "team"
            # the run the version points to has the metrics and the adapter's files
            assert len(server.metric_history(run_id, "loss")) >= 2
            assert set(server.metric_history(run_id, "eval_loss")) >= {0, 10}
            files = {f["path"] for f in server.api("artifacts/list", run_id=run_id, path="adapter").get("files", [])}
            assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= files, files
    finally:
        server.stop()


def test_mlflow_unreachable_fails_before_training(s3_bucket, tiny_model, tmp_path, monkeypatch, capsys):
    from tests.support.s3 import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = config(tiny_model, s3_bucket.uri("run"), s3_bucket.endpoint_url, reportTo=["mlflow"],
                 mlflow={"trackingUri": url})
    isolate_tracking_env(monkeypatch)
    monkeypatch.setattr("lft_trainer.reporting.tracking.PROBE_ATTEMPTS", 1)
    code, term = run_in_process(cfg, tmp_path, monkeypatch)
    out = capsys.readouterr().out
    assert code == 3, out[-3000:]
    assert term["outcome"] == "invalid_input" and term["reason"] == "TrackingUnreachable"
    assert "training.mlflow.trackingUri" in term["message"] and url in term["message"]
    error = json.loads(out.strip().splitlines()[-1])
    assert error["field"] == "training.mlflow.trackingUri"
    assert not s3_bucket.keys("run/checkpoints/"), "it trained before failing"


def test_mlflow_refusing_the_credentials_is_named(monkeypatch, fake_secret):
    """A real HTTP server that wants other credentials: the probe sends the Secret's, gets 401, and says so."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from lft_api.tracking_spec import MlflowSpec
    from lft_trainer.errors import InvalidInput
    from lft_trainer.reporting.tracking import probe_mlflow

    seen: list[str] = []

    class Refuse(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", fake_secret)
        env = {"MLFLOW_TRACKING_USERNAME": "lft", "MLFLOW_TRACKING_PASSWORD": fake_secret}
        with pytest.raises(InvalidInput) as err:
            probe_mlflow(MlflowSpec(tracking_uri=url, experiment_name="x"), env)
    finally:
        server.shutdown()
    assert err.value.reason == "TrackingAccessDenied" and err.value.field == "training.mlflow.credentialsSecretRef"
    assert "HTTP 401" in err.value.message and fake_secret not in err.value.message
    assert seen and seen[0].startswith("Basic ")  # the Secret's username and password went to the server


def test_wandb_offline_run_files_with_the_history(s3_bucket, tiny_model, tmp_path, monkeypatch, capsys):
    cfg = config(tiny_model, s3_bucket.uri("run"), s3_bucket.endpoint_url, maxSteps=STEPS, loggingSteps=LOGGING,
                 evalSteps=10, reportTo=["wandb", "tensorboard"], wandb={"project": "lft-it", "mode": "offline"})
    cfg["evaluation"] = {"samples": 0}
    term, out = _train(cfg, tmp_path, monkeypatch, capsys)

    files = _download(s3_bucket, "run/wandb/", tmp_path / "wandb")
    runs = [d for d in files.iterdir() if d.name.startswith("offline-run-")]
    assert len(runs) == 1, list(files.iterdir())
    run_files = list(runs[0].glob("run-*.wandb"))
    assert len(run_files) == 1, sorted(p.name for p in runs[0].rglob("*"))
    rows = read_wandb_history(run_files[0])
    history = {row["train/global_step"]: row["train/loss"] for row in rows if "train/loss" in row}
    losses = _logged_losses(out)
    assert set(history) == set(losses) and len(history) >= 4
    for step, loss in losses.items():
        assert history[step] == pytest.approx(loss, rel=1e-3), step
    summary = json.loads(s3_bucket.get_bytes("run/training_summary.json"))
    assert summary["artifacts"]["wandb"] == f"s3://{s3_bucket.name}/run/wandb"
    assert summary["artifacts"]["tensorboard"] == f"s3://{s3_bucket.name}/run/tensorboard"
