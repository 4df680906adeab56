"""training.reportTo: the spec's rules, the trainer's arguments and environment, the pre-flight decisions, the
operator's Secret mounts and the scrubbing of the trackers' credentials (pure functions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from lft_api.contract import RunIdentity
from lft_api.resource import LoRAFineTuneSpec
from lft_api.spec import TrainerConfig
from lft_operator import builders
from lft_operator.policy import Policy, violations
from lft_operator.settings import Settings
from lft_trainer.errors import InvalidInput
from lft_trainer.reporting import tracking
from lft_trainer.run import sft_args
from lft_trainer.storage.retry import scrub

BASE = {"model": {"name": "m"}, "dataset": {"uri": "d"}, "output": {"uri": "s3://b/r"}}
MLFLOW = {"trackingUri": "http://mlflow.mlops:5000", "experimentName": "phi3"}
WANDB = {"project": "p", "entity": "team", "mode": "offline"}
IDENTITY = RunIdentity(namespace="team-a", name="ft", uid="u-1", spec_hash="abc")
WORK = Path("/tmp/lft-work")


def cfg(**training) -> TrainerConfig:
    return TrainerConfig.model_validate({**BASE, "training": training})


# -- the spec ----------------------------------------------------------------------------------
def test_default_is_no_tracking_as_before():
    c = cfg()
    assert c.training.report_to == [] and c.training.mlflow is None and c.training.wandb is None
    assert sft_args.sft_kwargs(c, "/o", cuda=False, dtype_name="float32", has_eval=False)["report_to"] == []
    assert tracking.tracking_env(c, WORK, IDENTITY) == {}


@pytest.mark.parametrize("training, words", [
    ({"reportTo": ["mlflow"]}, ["reportTo mlflow needs training.mlflow"]),
    ({"reportTo": ["wandb"]}, ["reportTo wandb needs training.wandb"]),
    ({"mlflow": MLFLOW}, ["training.mlflow is set but reportTo does not list mlflow"]),
    ({"reportTo": ["tensorboard", "tensorboard"]}, ["twice"]),
    ({"reportTo": ["comet"]}, ["reportTo", "tensorboard", "mlflow", "wandb"]),
    ({"reportTo": ["mlflow"], "mlflow": {"trackingUri": "https://bob:hunter2@mlflow:5000"}},
     ["trackingUri", "credentialsSecretRef"]),
    ({"reportTo": ["mlflow"], "mlflow": {"trackingUri": "https://hunter2@mlflow:5000"}}, ["trackingUri", "token@"]),
    ({"reportTo": ["wandb"], "wandb": {"project": "p", "mode": "sometimes"}}, ["mode", "offline"]),
])
def test_invalid_tracking_settings_name_the_field(training, words):
    with pytest.raises(ValidationError) as err:
        cfg(**training)
    text = str(err.value)
    assert all(w in text for w in words), text
    assert "hunter2" not in str(err.value.errors(include_input=False))


def test_tracking_does_not_change_the_result_hash():
    plain = cfg(learningRate=1e-3)
    tracked = cfg(learningRate=1e-3, reportTo=["tensorboard", "mlflow", "wandb"], mlflow=MLFLOW, wandb=WANDB)
    assert tracked.result_hash() == plain.result_hash()
    assert cfg(learningRate=2e-3).result_hash() != plain.result_hash()


# -- arguments and environment -------------------------------------------------------------------
def test_report_to_and_the_environment_each_integration_reads():
    c = cfg(reportTo=["tensorboard", "mlflow", "wandb"], mlflow=MLFLOW, wandb=WANDB)
    assert sft_args.sft_kwargs(c, "/o", cuda=False, dtype_name="float32", has_eval=False)["report_to"] == [
        "tensorboard", "mlflow", "wandb"]
    env = tracking.tracking_env(c, WORK, IDENTITY)
    assert env["TENSORBOARD_LOGGING_DIR"] == "/tmp/lft-work/tensorboard"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.mlops:5000" and env["MLFLOW_EXPERIMENT_NAME"] == "phi3"
    assert env["HF_MLFLOW_LOG_ARTIFACTS"] == "FALSE"  # no adapter copies on the tracking server
    assert env["WANDB_PROJECT"] == "p" and env["WANDB_ENTITY"] == "team" and env["WANDB_MODE"] == "offline"
    assert env["WANDB_DIR"].startswith("/tmp/lft-work/") and env["WANDB_CONSOLE"] == "off"
    assert not any("PASSWORD" in k or "TOKEN" in k or "API_KEY" in k for k in env)  # credentials: the Secret's


def test_only_the_requested_integrations_get_their_environment():
    env = tracking.tracking_env(cfg(reportTo=["tensorboard"]), WORK, IDENTITY)
    assert list(env) == ["TENSORBOARD_LOGGING_DIR"]
    env = tracking.tracking_env(cfg(reportTo=["mlflow"], mlflow={"trackingUri": "http://m"}), WORK, IDENTITY)
    assert "MLFLOW_EXPERIMENT_NAME" not in env and "TENSORBOARD_LOGGING_DIR" not in env


def test_run_name_tags_and_link():
    assert tracking.run_name(IDENTITY) == "team-a/ft"
    assert tracking.run_name(RunIdentity(spec_hash="x")) == "lora-finetune"
    assert tracking.run_tags(IDENTITY, None) == {"lft.name": "ft", "lft.namespace": "team-a", "lft.uid": "u-1",
                                                 "lft.resultHash": "abc"}
    assert tracking.run_tags(IDENTITY, 40)["lft.resumedFromStep"] == "40"
    assert tracking._ui_link("http://u@mlflow:5000/sub/", "3", "r1") == "http://mlflow:5000/sub/#/experiments/3/runs/r1"
    assert tracking._ui_link("databricks", "3", "r1") is None


# -- pre-flight ----------------------------------------------------------------------------------
def _check(c: TrainerConfig, installed=(), env=None, probed=None):
    def probe(spec, env):
        probed.append(spec.tracking_uri)

    tracking.check(c, env or {}, installed=lambda name: name in installed, probe=probe if probed is not None else None)


@pytest.mark.parametrize("target, extra, package", [
    ("tensorboard", {}, "tensorboardX or tensorboard"),
    ("mlflow", {"mlflow": MLFLOW}, "mlflow"),
    ("wandb", {"wandb": WANDB}, "wandb"),
])
def test_a_missing_package_fails_naming_the_field(target, extra, package):
    with pytest.raises(InvalidInput) as err:
        _check(cfg(reportTo=[target], **extra), installed=("torch",), probed=[])
    assert err.value.reason == "TrackingUnavailable" and err.value.field == "training.reportTo"
    assert f"training.reportTo {target}" in err.value.message and package in err.value.message


def test_tensorboard_takes_either_writer_package():
    for package in ("tensorboardX", "tensorboard"):
        _check(cfg(reportTo=["tensorboard"]), installed=(package,))


def test_wandb_online_needs_its_key_offline_does_not():
    online = cfg(reportTo=["wandb"], wandb={"project": "p"})
    with pytest.raises(InvalidInput) as err:
        _check(online, installed=("wandb",))
    assert err.value.reason == "MissingCredentials" and err.value.field == "training.wandb.credentialsSecretRef"
    _check(online, installed=("wandb",), env={"WANDB_API_KEY": "k" * 40})
    _check(cfg(reportTo=["wandb"], wandb=WANDB), installed=("wandb",))


def test_mlflow_is_probed_after_the_package_check():
    probed: list[str] = []
    _check(cfg(reportTo=["mlflow"], mlflow=MLFLOW), installed=("mlflow",), probed=probed)
    assert probed == ["http://mlflow.mlops:5000"]
    _check(cfg(reportTo=["tensorboard"]), installed=("tensorboardX",), probed=probed)
    assert probed == ["http://mlflow.mlops:5000"]


def test_non_http_tracking_uris_are_not_probed():
    spec = cfg(reportTo=["mlflow"], mlflow={"trackingUri": "databricks"}).training.mlflow
    tracking.probe_mlflow(spec, {}, sleep=lambda s: pytest.fail("no network for databricks"))


def test_auth_header_from_the_secrets_keys():
    assert tracking._auth_header({"MLFLOW_TRACKING_TOKEN": "t0k"}) == {"Authorization": "Bearer t0k"}
    assert tracking._auth_header({"MLFLOW_TRACKING_USERNAME": "a", "MLFLOW_TRACKING_PASSWORD": "b"}) == {
        "Authorization": "Basic YTpi"}
    assert tracking._auth_header({"MLFLOW_TRACKING_USERNAME": "a"}) == {}


@pytest.mark.parametrize("var", ["MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "WANDB_API_KEY", "HF_TOKEN"])
def test_tracker_credentials_are_scrubbed(monkeypatch, var):
    monkeypatch.setenv(var, "v3ry-s3cret-value")
    assert "v3ry-s3cret-value" not in scrub(f"POST failed: key=v3ry-s3cret-value for {var}")


# -- the operator mounts the Secrets, by reference only ---------------------------------------------
def test_tracking_secrets_become_env_from_by_reference():
    spec = LoRAFineTuneSpec.model_validate({
        **BASE, "storageSecretRef": {"name": "s3-creds"},
        "training": {"reportTo": ["mlflow", "wandb"],
                     "mlflow": {**MLFLOW, "credentialsSecretRef": {"name": "mlflow-creds"}},
                     "wandb": {"project": "p", "credentialsSecretRef": {"name": "wandb-key"}}}})
    assert builders.tracking_secrets(spec) == [("mlflow-creds", "spec.training.mlflow.credentialsSecretRef"),
                                               ("wandb-key", "spec.training.wandb.credentialsSecretRef")]
    job = builders.job(builders.Owner("ft", "team-a", "u-1"), spec, Settings())
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds", "optional": False}},
                                    {"secretRef": {"name": "mlflow-creds", "optional": False}},
                                    {"secretRef": {"name": "wandb-key", "optional": False}}]
    config = json.loads(builders.config_map(builders.Owner("ft", "team-a", "u-1"), spec, Settings())["data"][
        builders.CONFIG_FILE])
    assert config["training"]["mlflow"]["credentialsSecretRef"] == {"name": "mlflow-creds"}
    assert builders.tracking_secrets(LoRAFineTuneSpec.model_validate(BASE)) == []


def test_the_admin_policy_governs_tracking_secrets_like_the_storage_secret():
    spec = LoRAFineTuneSpec.model_validate({
        **BASE, "storageSecretRef": {"name": "s3-creds"},
        "training": {"reportTo": ["mlflow"], "mlflow": {**MLFLOW, "credentialsSecretRef": {"name": "admin-token"}}}})
    # Closed by default: only the operator's storage Secret, as for spec.storageSecretRef.
    assert [m.split(" is ")[0] for m in violations(spec, Policy(), "lft/trainer:cpu", "s3-creds", "s3-creds")] == [
        'spec.training.mlflow.credentialsSecretRef.name "admin-token"']
    strict = Policy(allowed_storage_secrets=("s3-creds", "mlflow-creds"))
    assert violations(spec, strict, "lft/trainer:cpu", "s3-creds") == [
        'spec.training.mlflow.credentialsSecretRef.name "admin-token" is not allowed: every key of it would become '
        "the trainer's environment (allowed: the operator's storage Secret and policy.allowedStorageSecrets: "
        "s3-creds, mlflow-creds)"]
    assert violations(spec.model_copy(update={"training": spec.training.model_copy(update={
        "mlflow": spec.training.mlflow.model_copy(update={"credentials_secret_ref": None})})}),
        strict, "lft/trainer:cpu", "s3-creds") == []
