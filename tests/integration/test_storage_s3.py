"""Storage and checkpoints against a real S3 server (moto standalone, loopback), with real outages.

Assertions about what landed in the bucket use an independent boto3 client, not the code under test.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time

import pytest

from lft_api.contract import CHECKPOINT_MANIFEST
from lft_api.spec import StorageSpec
from lft_trainer.errors import InvalidInput, StorageError
from lft_trainer.storage.checkpoints import (
    build_manifest,
    download_checkpoint,
    find_latest_complete_checkpoint,
)
from lft_trainer.storage.store import RetryPolicy, Storage, download
from lft_trainer.storage.uploader import CheckpointUploader
from tests.support.s3 import free_port

pytestmark = pytest.mark.integration

# Short budgets keep the suite fast; the outages below are shorter than them.
FAST = RetryPolicy(total_seconds=20, initial_delay=0.2, max_delay=1.0, check_seconds=2)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_checkpoint(path, step: int, big: int = 256 * 1024, marker: bytes = b""):
    """A checkpoint-like directory; `marker` is embedded in the middle of the big file's bytes."""
    path.mkdir(parents=True, exist_ok=True)
    half = os.urandom(big // 2)
    (path / "adapter_model.safetensors").write_bytes(half + marker + os.urandom(big // 2))
    (path / "optimizer.pt").write_bytes(os.urandom(big))
    (path / "scheduler.pt").write_bytes(os.urandom(1000))
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


def assert_checkpoint_in_bucket(bucket, prefix: str, step: int, local_manifest: dict) -> None:
    """Every file of the manifest is in the bucket with its sha256, and the manifest itself is there."""
    base = f"{prefix}/checkpoints/checkpoint-{step}"
    keys = bucket.keys(base + "/")
    remote_manifest = json.loads(bucket.get_bytes(f"{base}/{CHECKPOINT_MANIFEST}"))
    assert remote_manifest["files"] == local_manifest["files"]
    for f in local_manifest["files"]:
        key = f"{base}/{f['name']}"
        assert keys.get(key) == f["size"], key
        assert sha(bucket.get_bytes(key)) == f["sha256"], key
    assert set(keys) == {f"{base}/{f['name']}" for f in local_manifest["files"]} | {f"{base}/{CHECKPOINT_MANIFEST}"}


# -- basic operations ------------------------------------------------------------------------
def test_roundtrip(s3_bucket, tmp_path):
    st = Storage(s3_bucket.uri("runs/r1"), StorageSpec(endpoint_url=s3_bucket.endpoint_url), FAST)
    src = make_checkpoint(tmp_path / "src", 1, big=10_000)
    (src / "sub").mkdir()
    (src / "sub" / "tok.json").write_text("{}")
    digests = st.upload_dir(src, "adapter")
    assert {d.name for d in digests} == {
        "adapter_model.safetensors",
        "optimizer.pt",
        "scheduler.pt",
        "trainer_state.json",
        "sub/tok.json",
    }
    for d in digests:
        assert sha(s3_bucket.get_bytes(f"runs/r1/adapter/{d.name}")) == d.sha256
    assert st.list_dirs() == ["adapter"] and st.list_dirs("adapter") == ["sub"]
    assert st.exists("adapter/sub/tok.json") and not st.exists("adapter/none")
    st.put_json("training_summary.json", {"ok": True})
    assert json.loads(s3_bucket.get_bytes("runs/r1/training_summary.json")) == {"ok": True}
    assert st.get_json("training_summary.json") == {"ok": True}

    t0 = time.monotonic()
    with pytest.raises(FileNotFoundError):
        st.get_json("absent.json")
    assert time.monotonic() - t0 < 1.0  # a 404 is not retried

    back = st.download_dir("adapter", tmp_path / "back")
    assert (back / "sub" / "tok.json").read_text() == "{}"
    assert (back / "optimizer.pt").read_bytes() == (src / "optimizer.pt").read_bytes()
    st.delete("adapter")
    assert s3_bucket.keys("runs/r1/adapter/") == {}


def test_download_inputs_by_uri(s3_bucket, tmp_path):
    spec = StorageSpec(endpoint_url=s3_bucket.endpoint_url)
    s3_bucket.put_bytes("data/train.jsonl", b'{"text": "hi"}\n')
    s3_bucket.put_bytes("models/tiny/config.json", b"{}")
    s3_bucket.put_bytes("models/tiny/model.safetensors", b"weights")
    f = download(s3_bucket.uri("data/train.jsonl"), tmp_path / "data", spec, FAST)
    assert f == tmp_path / "data" / "train.jsonl" and f.read_bytes() == b'{"text": "hi"}\n'
    d = download(s3_bucket.uri("models/tiny"), tmp_path / "model", spec, FAST)
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors"]
    with Storage(s3_bucket.uri("data/train.jsonl"), spec, FAST).open() as fh:
        assert fh.read() == b'{"text": "hi"}\n'


def test_a_directory_whose_object_names_leave_it_is_refused_before_writing(s3_bucket, tmp_path):
    # A valid S3 key; downloaded as it is, it would be written two levels above the model directory.
    s3_bucket.put_bytes("models/evil/config.json", b"{}")
    s3_bucket.put_bytes("models/evil/../../escaped.txt", b"x")
    spec = StorageSpec(endpoint_url=s3_bucket.endpoint_url)
    with pytest.raises(InvalidInput) as ei:
        download(s3_bucket.uri("models/evil"), tmp_path / "deep" / "model", spec, FAST)
    assert ei.value.reason == "UnsafeObjectName" and "../../escaped.txt" in ei.value.message
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "deep").exists()


# -- pre-flight access checks --------------------------------------------------------------
def check(uri: str, endpoint: str, **kw) -> InvalidInput:
    with pytest.raises(InvalidInput) as ei:
        Storage(uri, StorageSpec(endpoint_url=endpoint), FAST).check_access(**kw)
    return ei.value


def test_check_access_ok_leaves_nothing_behind(s3_bucket):
    Storage(s3_bucket.uri("out"), StorageSpec(endpoint_url=s3_bucket.endpoint_url), FAST).check_access()
    assert s3_bucket.keys() == {}


def test_check_access_error_kinds(s3_bucket, monkeypatch, caplog, fake_secret):
    caplog.set_level(logging.DEBUG, logger="lft_trainer")
    ep = s3_bucket.endpoint_url

    err = check("s3://no-such-bucket-xyz/out", ep)
    assert err.reason == "BucketNotFound"
    assert "no-such-bucket-xyz" in err.message and ep in err.message

    dead = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(StorageError) as unreachable:  # retryable: the server may be restarting
        Storage(s3_bucket.uri("out"), StorageSpec(endpoint_url=dead), FAST).check_access(timeout=2)
    assert time.monotonic() - t0 < 5  # seconds, not minutes
    text = str(unreachable.value)
    assert "StorageUnreachable" in text and dead in text and s3_bucket.uri("out") in text

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    err_missing = check(s3_bucket.uri("out"), ep)
    assert err_missing.reason == "MissingCredentials"
    assert "AWS_ACCESS_KEY_ID" in err_missing.message

    for e in (err, err_missing):
        assert fake_secret not in e.message
    assert fake_secret not in caplog.text


def test_check_access_rejected_credentials(s3_bucket, s3_server, monkeypatch, fake_secret, caplog):
    caplog.set_level(logging.DEBUG, logger="lft_trainer")
    # A read-only IAM user, created before authentication is switched on.
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=s3_server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="AKIATESTFAKEKEY00000",
        aws_secret_access_key=fake_secret,
    )
    user = f"reader-{s3_bucket.name}"
    iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user,
        PolicyName="read",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetObject"], "Resource": "*"}],
            }
        ),
    )
    key = iam.create_access_key(UserName=user)["AccessKey"]
    getter = f"getter-{s3_bucket.name}"
    iam.create_user(UserName=getter)
    iam.put_user_policy(
        UserName=getter,
        PolicyName="get",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "*"}],
            }
        ),
    )
    getter_key = iam.create_access_key(UserName=getter)["AccessKey"]
    s3_bucket.put_bytes("data/train.jsonl", b"{}")

    with s3_server.iam_auth():
        # keys unknown to the server
        err = check(s3_bucket.uri("out"), s3_bucket.endpoint_url)
        assert err.reason == "StorageAccessDenied"
        assert "access key id is not known" in err.message and fake_secret not in err.message

        # known keys, wrong secret
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value-123")
        err = check(s3_bucket.uri("out"), s3_bucket.endpoint_url)
        assert err.reason == "StorageAccessDenied" and "does not match" in err.message
        assert "wrong-secret-value-123" not in err.message

        # valid read-only keys: reading passes, writing is refused
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        Storage(s3_bucket.uri("out"), StorageSpec(endpoint_url=s3_bucket.endpoint_url), FAST).check_access(write=False)
        err = check(s3_bucket.uri("out"), s3_bucket.endpoint_url)
        assert err.reason == "StorageAccessDenied" and "access denied" in err.message
        assert key["SecretAccessKey"] not in err.message

        # GetObject on one input file without ListBucket: reading that file passes, its prefix does not
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", getter_key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", getter_key["SecretAccessKey"])
        Storage(s3_bucket.uri("data/train.jsonl"), StorageSpec(endpoint_url=s3_bucket.endpoint_url), FAST).check_access(
            write=False
        )
        # a missing key: moto answers 404 (reachable, absent: passes); AWS S3 answers 403 without
        # ListBucket, which check_access reports as StorageAccessDenied
        Storage(
            s3_bucket.uri("data/missing.jsonl"), StorageSpec(endpoint_url=s3_bucket.endpoint_url), FAST
        ).check_access(write=False)
    assert key["SecretAccessKey"] not in caplog.text and fake_secret not in caplog.text


# -- retries and outages ---------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["refuse", "reset"])
def test_operation_waits_out_a_short_outage(s3_bucket, flaky_proxy, caplog, mode):
    caplog.set_level(logging.WARNING, logger="lft_trainer")
    st = Storage(s3_bucket.uri("out"), StorageSpec(endpoint_url=flaky_proxy.endpoint_url), FAST)
    st.put_json("a.json", {"n": 1})
    flaky_proxy.down(seconds=1.5, mode=mode)
    t0 = time.monotonic()
    st.put_json("b.json", {"n": 2})
    assert 1.4 < time.monotonic() - t0 < 8
    assert json.loads(s3_bucket.get_bytes("out/b.json")) == {"n": 2}
    assert "retry 1 in" in caplog.text  # it did fail first, and retried
    if mode == "reset":
        assert flaky_proxy.outages[0].refused_connections >= 1


def test_outage_longer_than_budget_raises_storage_error(s3_bucket, flaky_proxy, fake_secret):
    policy = RetryPolicy(total_seconds=2, initial_delay=0.2, max_delay=0.5)
    st = Storage(s3_bucket.uri("out"), StorageSpec(endpoint_url=flaky_proxy.endpoint_url), policy)
    flaky_proxy.down()  # until up()
    t0 = time.monotonic()
    with pytest.raises(StorageError) as ei:
        st.put_json("c.json", {})
    assert time.monotonic() - t0 < 4
    assert "write s3://" in str(ei.value) and "gave up after" in str(ei.value)
    assert fake_secret not in str(ei.value)
    # queries must not read an outage as "absent" (a pre-flight would call a model missing)
    quick = Storage(s3_bucket.uri("out"), StorageSpec(endpoint_url=flaky_proxy.endpoint_url),
                    RetryPolicy(total_seconds=0.3, initial_delay=0.1))
    for query in (lambda: quick.exists("c.json"), lambda: quick.is_dir("x"), lambda: quick.list_dirs("checkpoints"),
                  lambda: quick.get_json("c.json")):
        with pytest.raises(StorageError):
            query()
    flaky_proxy.up()


# -- the uploader against S3 -------------------------------------------------------------------
def test_uploader_retention_and_callbacks(s3_bucket, tmp_path):
    st = Storage(s3_bucket.uri("run"), StorageSpec(endpoint_url=s3_bucket.endpoint_url), FAST)
    seen = []
    up = CheckpointUploader(st, keep_last=2, on_uploaded=seen.append)
    manifests = {}
    for step in (5, 10, 15):
        ck = make_checkpoint(tmp_path / "out" / f"checkpoint-{step}", step, big=20_000)
        manifests[step] = build_manifest(ck, step)
        up.submit(ck, step)
    assert up.flush(timeout=60) is True
    up.close()
    assert [(r.step, r.uri) for r in seen] == [
        (s, s3_bucket.uri(f"run/checkpoints/checkpoint-{s}")) for s in (5, 10, 15)
    ]
    assert {k.split("/")[2] for k in s3_bucket.keys("run/checkpoints/")} == {"checkpoint-10", "checkpoint-15"}
    for step in (10, 15):
        assert_checkpoint_in_bucket(s3_bucket, "run", step, manifests[step])
    ref = find_latest_complete_checkpoint(st)
    path = download_checkpoint(st, ref, tmp_path / "resume")
    assert json.loads((path / "trainer_state.json").read_text()) == {"global_step": 15}


@pytest.mark.parametrize("where", ["first-put", "mid-body"])
def test_checkpoint_upload_survives_outage(s3_bucket, flaky_proxy, tmp_path, where, caplog):
    """The server becomes unreachable (connections reset, then refused for 3 s) during a checkpoint upload."""
    caplog.set_level(logging.WARNING, logger="lft_trainer")
    st = Storage(s3_bucket.uri("run"), StorageSpec(endpoint_url=flaky_proxy.endpoint_url), FAST)
    st.put_json("hello.json", {})
    body_marker = b"--OUTAGE-HERE-" + os.urandom(8).hex().encode()
    ck = make_checkpoint(tmp_path / "out" / "checkpoint-20", 20, big=2 * 1024 * 1024, marker=body_marker)
    manifest = build_manifest(ck, 20)
    if where == "first-put":
        flaky_proxy.arm_outage(f"PUT /{s3_bucket.name}/run/checkpoints/checkpoint-20/".encode(), seconds=3)
    else:  # inside the 2 MiB body of adapter_model.safetensors
        flaky_proxy.arm_outage(body_marker, seconds=3)

    seen = []
    up = CheckpointUploader(st, keep_last=2, on_uploaded=seen.append)
    t0 = time.monotonic()
    up.submit(ck, 20)
    assert up.flush(timeout=60) is True
    elapsed = time.monotonic() - t0
    up.close()

    outage = flaky_proxy.outages[0]
    assert outage.ended is not None and outage.trigger is not None  # the outage happened, during the upload
    assert elapsed >= 3.0
    assert outage.ended - outage.started >= 2.9
    assert [r.step for r in seen] == [20]
    assert_checkpoint_in_bucket(s3_bucket, "run", 20, manifest)
    assert "retry" in caplog.text  # the client saw failures and retried
    path = download_checkpoint(st, find_latest_complete_checkpoint(st), tmp_path / "resume")
    assert (path / "adapter_model.safetensors").read_bytes() == (ck / "adapter_model.safetensors").read_bytes()


def test_submit_is_bounded_while_storage_is_down(s3_bucket, flaky_proxy, tmp_path):
    """Training gets at most one checkpoint uploading and one queued ahead of a dead storage."""
    st = Storage(s3_bucket.uri("run"), StorageSpec(endpoint_url=flaky_proxy.endpoint_url), FAST)
    up = CheckpointUploader(st, keep_last=5, max_pending=1)
    flaky_proxy.down()
    cks = [make_checkpoint(tmp_path / "out" / f"checkpoint-{s}", s, big=1000) for s in (1, 2, 3)]
    up.submit(cks[0], 1)
    time.sleep(0.3)
    up.submit(cks[1], 2)
    third = threading.Event()
    threading.Thread(target=lambda: (up.submit(cks[2], 3), third.set()), daemon=True).start()
    assert not third.wait(1.0)
    flaky_proxy.up()
    assert third.wait(20)
    assert up.flush(timeout=60) is True
    up.close()
    assert [r.step for r in up.uploaded] == [1, 2, 3]
    assert {k.split("/")[2] for k in s3_bucket.keys("run/checkpoints/")} == {
        "checkpoint-1",
        "checkpoint-2",
        "checkpoint-3",
    }
