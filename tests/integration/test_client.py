"""lft_client against the real API server and the real S3 server (moto), in this process.

As in test_cli.py, no operator runs in these namespaces: each test creates the LoRAFineTune with the client and
writes its status through the status subresource the way the operator and the trainer do, so what wait() watches
is what they would leave. pull_adapter gets its credentials from the run's Secret: the AWS_* variables are removed
from this process's environment first.
"""

from __future__ import annotations

import threading
import time
import warnings
from pathlib import Path

import pytest

from lft_client import (
    AdapterMismatch,
    AlreadyExists,
    ApiRefused,
    Client,
    FineTune,
    InvalidSpec,
    LftError,
    NotFound,
    RunFailed,
    WaitTimeout,
)
from tests.integration.test_cli import ADAPTER_FILES, _cond, _put_run, _storage_secret, patch_status, succeeded_status
from tests.support.kube import Kube, fresh_namespace
from tests.support.operator import spec as base_spec
from tests.support.s3 import FAKE_SECRET_ACCESS_KEY

pytestmark = pytest.mark.integration


@pytest.fixture
def namespace(kube: Kube):
    """Outside the session operator's namespaces: the tests write the status themselves."""
    with fresh_namespace(kube, prefix="lft-cli-") as name:
        yield name


@pytest.fixture
def client(kube: Kube, namespace: str):
    with Client(kubeconfig=kube.kubeconfig, namespace=namespace) as c:
        yield c


def _later(seconds: float, fn, *args) -> threading.Timer:
    timer = threading.Timer(seconds, fn, args)
    timer.start()
    return timer


def test_create_get_list_delete(kube, namespace, client):
    ft = client.create("bot", base_spec(), labels={"team": "a"})
    assert isinstance(ft, FineTune) and (ft.name, ft.namespace, ft.labels) == ("bot", namespace, {"team": "a"})
    stored = kube.lft(namespace, "bot")
    assert stored["spec"]["model"]["name"] == base_spec()["model"]["name"]
    assert stored["spec"]["lora"]["r"] == 16  # the CRD's default: only the fields set were sent
    client.create("other", base_spec())
    assert [f.name for f in client.list()] == ["bot", "other"]
    assert [f.name for f in client.list(labels={"team": "a"})] == ["bot"]
    assert client.get("bot").uid == stored["metadata"]["uid"] and client.get(ft).phase is None
    with pytest.raises(AlreadyExists, match="409 AlreadyExists"):
        client.create("bot", base_spec())
    client.delete(ft)
    with pytest.raises(NotFound, match=f'lorafinetune "bot" not found in namespace "{namespace}"'):
        client.get("bot")
    with pytest.raises(NotFound):
        client.delete("bot")


def test_an_invalid_dict_fails_before_sending_and_a_cel_refusal_carries_the_servers_message(kube, namespace, client):
    with pytest.raises(InvalidSpec, match=r"nothing was sent\): spec\.training\.epochs: Input should be greater"):
        client.create("typo", base_spec(training={"epochs": -1}))
    with pytest.raises(InvalidSpec, match="spec.lora.rnak"):
        client.create("typo", base_spec(lora={"rnak": 4}))
    assert kube.lft(namespace, "typo") is None

    # The models accept this one; the CRD's CEL rule refuses it (422), and its message names the field.
    with pytest.raises(ApiRefused) as refused:
        client.create("qlora", base_spec(lora={"quantization": "4bit"}))
    assert refused.value.status == 422 and refused.value.reason == "Invalid"
    assert "spec.lora.quantization" in refused.value.message
    assert "lora.quantization 4bit (QLoRA, bitsandbytes) needs a GPU" in str(refused.value)
    # validate=False: the server's strict field validation refuses an unknown field (not dropped).
    with pytest.raises(ApiRefused) as unknown:
        client.create("typo", base_spec(lora={"rnak": 4}), validate=False)
    assert unknown.value.status in (400, 422) and "spec.lora.rnak" in unknown.value.message
    assert kube.lft(namespace, "qlora") is None and kube.lft(namespace, "typo") is None


def test_wait_follows_the_status_on_a_watch_and_reports_each_change(kube, namespace, client):
    ft = client.create("run", base_spec())
    seen: list[tuple] = []
    steps = [{"phase": "Running", "progress": {"step": 1, "totalSteps": 3, "display": "1/3 (33%)"}},
             {"phase": "Running", "progress": {"step": 2, "totalSteps": 3, "display": "2/3 (67%)"}},
             succeeded_status("s3://b/runs/run")]
    timers = [_later(1.0 + i, patch_status, kube, namespace, "run", s) for i, s in enumerate(steps)]
    started = time.monotonic()
    try:
        done = client.wait(ft, timeout=60, on_progress=lambda f: seen.append((f.phase, f.progress and f.progress.step)))
    finally:
        for t in timers:
            t.cancel()
    assert done.phase == "Succeeded" and done.adapter_uri == "s3://b/runs/run/adapter"
    assert seen == [(None, None), ("Running", 1), ("Running", 2), ("Succeeded", 200)]
    assert 3 <= time.monotonic() - started < 20

    # until: a phase on the way; an already-ended run returns at once.
    assert client.wait("run", until="Running", on_progress=None).phase == "Succeeded"


def test_wait_raises_run_failed_with_the_reason_and_message(kube, namespace, client, capsys):
    client.create("later", base_spec())
    patch_status(kube, namespace, "later", {"phase": "Running"})
    failed = {"phase": "Failed", "message": "CUDA out of memory at micro-batch 8",
              "conditions": [_cond("Failed", "True", "OutOfMemory", "x", "2026-01-01T00:00:00Z")]}
    timer = _later(2.0, patch_status, kube, namespace, "later", failed)
    try:
        with pytest.raises(RunFailed) as ended:
            client.wait("later", timeout=60, on_progress="print")
    finally:
        timer.cancel()
    assert str(ended.value) == "later Failed (OutOfMemory): CUDA out of memory at micro-batch 8"
    assert (ended.value.reason, ended.value.message) == ("OutOfMemory", "CUDA out of memory at micro-batch 8")
    assert ended.value.finetune.status.conditions[0].reason == "OutOfMemory"
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(" ", 1)[1] for line in printed] == [
        "later: Running", "later: Failed, CUDA out of memory at micro-batch 8"]
    assert client.wait("later", until=("Failed",), on_progress=None).phase == "Failed"


def test_wait_times_out_and_notices_a_deletion(kube, namespace, client):
    client.create("slow", base_spec())
    patch_status(kube, namespace, "slow", {"phase": "Running", "progress": {"step": 3, "totalSteps": 9,
                                                                            "display": "3/9 (33%)"}})
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"timed out after 3s waiting for slow \(phase Running, 3/9 \(33%\)\)"):
        client.wait("slow", timeout=3, on_progress=None)
    assert 3 <= time.monotonic() - started < 10
    timer = _later(1.5, client.delete, "slow")
    try:
        with pytest.raises(NotFound, match="was deleted"):
            client.wait("slow", timeout=30, on_progress=None)
    finally:
        timer.cancel()


def test_logs_without_a_trainer_pod_says_so(client):
    client.create("nopod", base_spec())
    with pytest.raises(LftError, match="nopod has no trainer pod \\(phase not reconciled yet\\)"):
        client.logs("nopod")


def test_pull_adapter_with_the_runs_secret_verified_against_the_status(kube, namespace, client, s3_bucket, tmp_path,
                                                                      monkeypatch):
    output = s3_bucket.uri("runs/run")
    _put_run(s3_bucket, "runs/run")
    _storage_secret(kube, namespace, "my-s3")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)  # the credentials must come from the run's Secret
    client.create("run", base_spec(output={"uri": output}, storage={"endpointUrl": s3_bucket.endpoint_url},
                                   storageSecretRef={"name": "my-s3"}))
    with pytest.raises(LftError, match="run has no adapter yet \\(phase not reconciled yet\\)"):
        client.pull_adapter("run", tmp_path / "early")
    patch_status(kube, namespace, "run", succeeded_status(output))

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the manifest is the operator's (status.adapter.files): no warning
        path = client.pull_adapter("run", tmp_path / "adapter")
    assert path == tmp_path / "adapter"
    assert {p.name: p.read_bytes() for p in path.iterdir()} == ADAPTER_FILES

    s3_bucket.put_bytes("runs/run/adapter/adapter_model.safetensors", b"tampered")
    with pytest.raises(AdapterMismatch) as bad:
        client.pull_adapter("run", tmp_path / "again")
    assert "adapter_model.safetensors: size 8 != 16384" in bad.value.problems
    assert "nothing was written to" in str(bad.value) and not (tmp_path / "again").exists()
    assert FAKE_SECRET_ACCESS_KEY not in str(bad.value) + repr(client) + repr(client.get("run"))


def test_pull_adapter_without_a_status_manifest_warns(kube, namespace, client, s3_bucket, tmp_path, monkeypatch):
    output = s3_bucket.uri("runs/old")
    _put_run(s3_bucket, "runs/old")
    _storage_secret(kube, namespace, "s3")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key, raising=False)
    client.create("old", base_spec(output={"uri": output}, storage={"endpointUrl": s3_bucket.endpoint_url},
                                   storageSecretRef={"name": "s3"}))
    status = succeeded_status(output)
    status["adapter"] = {"uri": f"{output}/adapter"}  # an operator that predates status.adapter.files
    patch_status(kube, namespace, "old", status)
    with pytest.warns(UserWarning, match="checked against .*training_summary.json"):
        path = client.pull_adapter("old", Path(tmp_path / "a"))
    assert sorted(p.name for p in path.iterdir()) == sorted(ADAPTER_FILES)
