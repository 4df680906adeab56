"""Storage: URI handling, error classification, retry budget, and the file:// backend (no network)."""

from __future__ import annotations

import json
import os

import botocore.exceptions as bce
import pytest

from lft_api.spec import StorageSpec
from lft_trainer.errors import InvalidInput, StorageError
from lft_trainer.storage.filesystems import split_uri
from lft_trainer.storage.retry import RetryPolicy, client_error_info, is_transient, retry_call, scrub
from lft_trainer.storage.store import Storage, download, sha256_file


def client_error(code: str, status: int) -> bce.ClientError:
    return bce.ClientError(
        {"Error": {"Code": code, "Message": f"{code} happened"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


def wrapped(exc: BaseException, outer: BaseException) -> BaseException:
    """outer raised `from` exc, as s3fs translates botocore errors."""
    try:
        try:
            raise exc
        except BaseException as inner:
            raise outer from inner
    except BaseException as e:  # noqa: BLE001 - the point is to capture it
        return e


# -- URIs ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "uri,expected",
    [
        ("s3://bucket/a/b/", ("s3", "bucket/a/b")),
        ("s3a://bucket/x", ("s3", "bucket/x")),
        ("gcs://b/p", ("gs", "b/p")),
        ("abfs://c/p", ("az", "c/p")),
        ("file:///data/x.jsonl", ("file", "/data/x.jsonl")),
        ("/models/tiny", ("file", "/models/tiny")),
    ],
)
def test_split_uri(uri, expected):
    assert split_uri(uri) == expected


def test_uri_joins_parts_and_refuses_escape(tmp_path):
    st = Storage("s3://bkt/runs/r1/", StorageSpec())
    assert st.base_uri == "s3://bkt/runs/r1"
    assert st.uri("checkpoints", "checkpoint-5/") == "s3://bkt/runs/r1/checkpoints/checkpoint-5"
    assert st.uri() == "s3://bkt/runs/r1"
    assert Storage(str(tmp_path)).uri("a") == f"file://{tmp_path}/a"
    with pytest.raises(ValueError):
        st.uri("../other")


# -- error classification ------------------------------------------------------------------
@pytest.mark.parametrize(
    "exc,transient",
    [
        (bce.EndpointConnectionError(endpoint_url="http://x"), True),
        (bce.ConnectionClosedError(endpoint_url="http://x"), True),
        (bce.ReadTimeoutError(endpoint_url="http://x"), True),
        (ConnectionRefusedError(111, "refused"), True),
        (ConnectionResetError(104, "reset"), True),
        (TimeoutError("slow"), True),
        (client_error("SlowDown", 503), True),
        (client_error("InternalError", 500), True),
        (client_error("Throttling", 400), True),
        (client_error("RequestTimeout", 400), True),
        (client_error("AccessDenied", 403), False),
        (client_error("NoSuchKey", 404), False),
        (FileNotFoundError("gone"), False),
        (PermissionError("no"), False),
        (ValueError("bug"), False),
    ],
)
def test_is_transient(exc, transient):
    assert is_transient(exc) is transient


def test_classification_follows_s3fs_translation_chain():
    # s3fs raises e.g. PermissionError / OSError from the botocore ClientError.
    assert not is_transient(wrapped(client_error("AccessDenied", 403), PermissionError("denied")))
    assert is_transient(wrapped(client_error("ServiceUnavailable", 503), OSError(5, "remote io")))
    assert client_error_info(wrapped(client_error("NoSuchBucket", 404), FileNotFoundError("b"))) == (404, "NoSuchBucket")


# -- retry budget (fake clock: no sleeping) ------------------------------------------------
class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def test_retry_succeeds_after_transient_errors():
    fc = FakeClock()
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 4:
            raise ConnectionRefusedError(111, "refused")
        return "ok"

    policy = RetryPolicy(total_seconds=60, initial_delay=1, multiplier=2, max_delay=10)
    assert retry_call(flaky, "op", policy, sleep=fc.sleep, clock=fc.clock) == "ok"
    assert len(calls) == 4
    # exponential with +-20% jitter: ~1, ~2, ~4
    for got, base in zip(fc.sleeps, [1, 2, 4], strict=True):
        assert 0.8 * base <= got <= 1.2 * base


def test_retry_gives_up_within_budget_with_storage_error():
    fc = FakeClock()
    policy = RetryPolicy(total_seconds=30, initial_delay=1, multiplier=2, max_delay=8)

    def down():
        raise bce.EndpointConnectionError(endpoint_url="http://minio:9000")

    with pytest.raises(StorageError) as ei:
        retry_call(down, "upload s3://b/k", policy, sleep=fc.sleep, clock=fc.clock)
    assert fc.now <= 30
    assert fc.now >= 30 - 8 * 1.2 - 0.01  # used (nearly) the whole budget, not one try
    assert "upload s3://b/k: gave up after" in str(ei.value)
    assert "EndpointConnectionError" in str(ei.value)


def test_non_transient_is_not_retried():
    fc = FakeClock()
    calls = []

    def denied():
        calls.append(1)
        raise wrapped(client_error("AccessDenied", 403), PermissionError("Access Denied"))

    with pytest.raises(PermissionError):
        retry_call(denied, "op", RetryPolicy(total_seconds=60), sleep=fc.sleep, clock=fc.clock)
    assert len(calls) == 1 and fc.sleeps == []


def test_retry_policy_from_env(monkeypatch):
    monkeypatch.setenv("LFT_STORAGE_RETRY_SECONDS", "7")
    p = RetryPolicy.from_env()
    assert p.total_seconds == 7 and p.check_seconds == 7
    monkeypatch.setenv("LFT_STORAGE_RETRY_SECONDS", "junk")
    assert RetryPolicy.from_env().total_seconds == 120


def test_scrub_removes_secrets_and_userinfo(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value-xyz")
    text = scrub("failed with s3cr3t-value-xyz at http://user:pw@minio:9000/b")
    assert "s3cr3t" not in text and "pw@" not in text
    assert "***" in text and "minio:9000/b" in text


# -- credentials and backends --------------------------------------------------------------
def test_missing_s3_credentials_is_invalid_input(monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    st = Storage("s3://bkt/out", StorageSpec(endpoint_url="http://127.0.0.1:1"))
    with pytest.raises(InvalidInput) as ei:
        st.check_access()
    assert ei.value.reason == "MissingCredentials"
    assert "AWS_ACCESS_KEY_ID" in ei.value.message and "AWS_SECRET_ACCESS_KEY" in ei.value.message


def test_secret_only_without_key_is_missing_credentials(monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_WEB_IDENTITY_TOKEN_FILE", raising=False)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "only-the-secret-123")
    with pytest.raises(InvalidInput) as ei:
        Storage("s3://bkt/out").exists("x")
    assert ei.value.reason == "MissingCredentials"
    assert "only-the-secret-123" not in ei.value.message


@pytest.mark.parametrize("uri,package", [("gs://bkt/out", "gcsfs"), ("az://container/out", "adlfs")])
def test_optional_backend_missing_gives_clear_error(uri, package):
    pytest.importorskip("fsspec")
    try:
        __import__(package)
        pytest.skip(f"{package} is installed")
    except ImportError:
        pass
    with pytest.raises(InvalidInput) as ei:
        Storage(uri).check_access()
    assert ei.value.reason == "UnsupportedStorage"
    assert package in ei.value.message


# -- file:// backend: the full API on a local directory -------------------------------------
def make_tree(root):
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "sub" / "b.bin").write_bytes(os.urandom(2048))
    return root


def test_file_storage_roundtrip(tmp_path):
    src = make_tree(tmp_path / "src")
    st = Storage(f"file://{tmp_path}/out")
    st.check_access()  # creates the directory, writes and deletes a probe
    assert [p.name for p in (tmp_path / "out").iterdir()] == []

    digests = st.upload_dir(src, "adapter")
    assert [(d.name, d.size) for d in digests] == [("a.txt", 5), ("sub/b.bin", 2048)]
    assert digests[1].sha256 == sha256_file(src / "sub" / "b.bin")
    assert st.list_files("adapter") == {"a.txt": 5, "sub/b.bin": 2048}
    assert st.list_dirs("") == ["adapter"]
    assert st.exists("adapter/a.txt") and not st.exists("adapter/nope")

    st.put_json("summary.json", {"loss": 1.5})
    assert st.get_json("summary.json") == {"loss": 1.5}
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == {"loss": 1.5}
    with pytest.raises(FileNotFoundError):
        st.get_json("missing.json")

    back = st.download_dir("adapter", tmp_path / "back")
    assert (back / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()

    st.delete("adapter")
    st.delete("adapter")  # absent is fine
    assert st.list_dirs("") == [] and st.list_files("adapter") == {}
    with pytest.raises(ValueError):
        st.delete("")


def test_download_of_absolute_uri(tmp_path):
    src = make_tree(tmp_path / "model")
    # a local path is used in place
    assert download(str(src), tmp_path / "x") == src
    assert download(f"file://{src}", tmp_path / "x") == src


def test_check_access_checks_access_not_existence(tmp_path):
    st = Storage(str(tmp_path / "nope"))
    st.check_access(write=False)  # reachable; existence is asked separately
    assert not st.exists() and not (tmp_path / "nope").exists()


def test_check_access_unwritable_local_output(tmp_path):
    (tmp_path / "file").write_text("x")  # a file where the output directory should be
    with pytest.raises(InvalidInput) as ei:
        Storage(str(tmp_path / "file" / "out")).check_access()
    assert ei.value.reason in ("StorageAccessDenied", "StorageUnreachable")
    assert str(tmp_path / "file" / "out") in ei.value.message
