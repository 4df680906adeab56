"""training.mlflow.registeredModelName: the registration request built from the run, and what register() asks
the MLflow client for, in order, with a failure of any step reported instead of raised. (Against a real
`mlflow server`: tests/integration/test_trainer_tracking.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from lft_api.contract import RunIdentity, TerminationMessage
from lft_api.spec import TrainerConfig
from lft_trainer.reporting import model_registry, tracking
from lft_trainer.storage.store import Storage

BASE = {"model": {"name": "microsoft/Phi-3-mini-4k-instruct", "revision": "abc123"}, "dataset": {"uri": "d"},
        "output": {"uri": "s3://b/r"}}
MLFLOW = {"trackingUri": "http://mlflow.mlops:5000", "experimentName": "phi3"}
IDENTITY = RunIdentity(namespace="team-a", name="ft", uid="u-1", spec_hash="abc")


def cfg(**mlflow) -> TrainerConfig:
    return TrainerConfig.model_validate({**BASE, "training": {"reportTo": ["mlflow"], "mlflow": {**MLFLOW, **mlflow}}})


def test_unset_registers_nothing_and_the_hash_is_the_same():
    assert model_registry.registration_request(cfg(), IDENTITY, "r1") is None
    named = cfg(registeredModelName="support-bot")
    assert named.result_hash() == cfg().result_hash()
    assert "registeredModelName" not in cfg().to_wire()["training"]["mlflow"]


@pytest.mark.parametrize("name", ["team/support-bot", "support:bot", " ", ""])
def test_names_mlflow_refuses_are_refused_naming_the_field(name):
    with pytest.raises(ValidationError) as err:
        cfg(registeredModelName=name)
    assert "registeredModelName" in str(err.value)


def test_the_request_names_the_run_the_source_and_the_base_model():
    request = model_registry.registration_request(cfg(registeredModelName="support-bot"), IDENTITY, "r1")
    assert request.name == "support-bot" and request.run_id == "r1"
    assert request.source == "runs:/r1/adapter"
    assert request.tags == {"base_model": "microsoft/Phi-3-mini-4k-instruct", "base_model_revision": "abc123",
                            "lft.name": "ft", "lft.namespace": "team-a", "lft.uid": "u-1", "lft.resultHash": "abc"}
    assert "team-a/ft" in request.description and "microsoft/Phi-3-mini-4k-instruct" in request.description
    assert model_registry.registration_request(cfg(registeredModelName="support-bot"), IDENTITY, None) is None


class MlflowError(Exception):
    def __init__(self, message: str, error_code: str):
        super().__init__(message)
        self.error_code = error_code


class FakeClient:
    """Records the MlflowClient calls; `fail` maps a method to the exception it raises."""

    def __init__(self, **fail: Exception):
        self.calls: list[tuple] = []
        self.fail = fail

    def _call(self, method: str, *args, **kwargs):
        self.calls.append((method, args, kwargs))
        if method in self.fail:
            raise self.fail[method]

    def log_artifacts(self, run_id, local_dir, artifact_path=None):
        self._call("log_artifacts", run_id, local_dir, artifact_path)

    def create_registered_model(self, name):
        self._call("create_registered_model", name)

    def create_model_version(self, name, source, **kwargs):
        self._call("create_model_version", name, source, **kwargs)
        return type("Version", (), {"version": 4})()


def _request():
    return model_registry.registration_request(cfg(registeredModelName="support-bot"), IDENTITY, "r1")


def test_register_logs_the_adapter_then_makes_the_version(tmp_path: Path):
    client = FakeClient()
    registration = model_registry.register(client, _request(), tmp_path)
    assert [c[0] for c in client.calls] == ["log_artifacts", "create_registered_model", "create_model_version"]
    assert client.calls[0][1] == ("r1", str(tmp_path), "adapter")
    method, args, kwargs = client.calls[2]
    assert args == ("support-bot", "runs:/r1/adapter")
    assert kwargs["run_id"] == "r1" and kwargs["tags"]["base_model"] == "microsoft/Phi-3-mini-4k-instruct"
    assert registration.version == "4" and registration.error is None and registration.source == "runs:/r1/adapter"


def test_an_existing_registered_model_gets_a_new_version(tmp_path: Path):
    client = FakeClient(create_registered_model=MlflowError("exists", "RESOURCE_ALREADY_EXISTS"))
    registration = model_registry.register(client, _request(), tmp_path)
    assert registration.version == "4" and registration.error is None


@pytest.mark.parametrize("fail, made", [
    ({"log_artifacts": OSError("connection refused")}, ["log_artifacts"]),
    ({"create_registered_model": MlflowError("no", "PERMISSION_DENIED")}, ["log_artifacts", "create_registered_model"]),
    ({"create_model_version": MlflowError("x" * 2000, "INTERNAL_ERROR")},
     ["log_artifacts", "create_registered_model", "create_model_version"]),
])
def test_a_failure_is_reported_not_raised(tmp_path: Path, fail, made):
    client = FakeClient(**fail)
    registration = model_registry.register(client, _request(), tmp_path)
    assert [c[0] for c in client.calls] == made
    assert registration.version is None and registration.error
    assert registration.error.startswith(type(next(iter(fail.values()))).__name__)
    assert len(registration.error) <= model_registry.ERROR_CHARS
    # it travels in the termination message, where the operator makes the Warning Event of it
    decoded = TerminationMessage.decode(TerminationMessage(outcome="succeeded", reason="Completed",
                                                           model_registration=registration).encode())
    assert decoded.model_registration == registration


def test_a_secret_in_the_registrys_answer_is_masked(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "v3ry-s3cret-value")
    client = FakeClient(log_artifacts=OSError("401 for token v3ry-s3cret-value"))
    assert "v3ry-s3cret-value" not in model_registry.register(client, _request(), tmp_path).error


def test_the_tracker_registers_only_its_own_run(tmp_path: Path):
    tracker = tracking.Tracker(cfg(registeredModelName="support-bot"), tmp_path, IDENTITY, Storage("s3://b/r"))
    assert tracker.mlflow_run_id is None
    assert tracker.register_adapter(tmp_path) is None  # no MLflow run was started: nothing to register from


def test_with_mlflows_own_client_and_store(tmp_path: Path, monkeypatch):
    """The real MlflowClient (mlflow-skinny, as in the image) on MLflow's file store, in this process: a finished
    run's adapter is logged and registered twice (the second finds the registered model: version 2)."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the file store is kept for this; the server: sqlite
    uri = (tmp_path / "store").as_uri()
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("lft"))
    client.log_metric(run.info.run_id, "loss", 1.25, step=5)
    client.set_terminated(run.info.run_id)  # register() runs after the Tracker ended the run
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    config = TrainerConfig.model_validate({**BASE, "training": {
        "reportTo": ["mlflow"], "mlflow": {"trackingUri": uri, "registeredModelName": "support-bot"}}})
    request = model_registry.registration_request(config, IDENTITY, run.info.run_id)
    assert [model_registry.register(MlflowClient(tracking_uri=uri), request, adapter).version
            for _ in range(2)] == ["1", "2"]
    version = client.get_model_version("support-bot", "2")
    assert version.source == f"runs:/{run.info.run_id}/adapter" and version.run_id == run.info.run_id
    assert version.tags["base_model"] == "microsoft/Phi-3-mini-4k-instruct"
    assert [f.path for f in client.list_artifacts(run.info.run_id, "adapter")] == ["adapter/adapter_config.json"]
    assert client.get_run(version.run_id).data.metrics == {"loss": 1.25}
