"""Shared pytest fixtures: a real S3 server (moto standalone) on loopback, buckets, and an outage proxy.

Quick use:

    def test_upload(s3_bucket):                      # fresh bucket, AWS_* env set to fake credentials
        uri = f"s3://{s3_bucket.name}/run1"
        spec = StorageSpec(endpoint_url=s3_bucket.endpoint_url)
        ...
        assert "run1/adapter/adapter_config.json" in s3_bucket.keys()

    def test_outage(s3_bucket, flaky_proxy):         # talk to S3 through flaky_proxy.endpoint_url
        spec = StorageSpec(endpoint_url=flaky_proxy.endpoint_url)
        # cut at the first checkpoint file PUT (a GET/HEAD of a checkpoint path would match a looser marker)
        flaky_proxy.arm_outage(f"PUT /{s3_bucket.name}/run1/checkpoints/".encode(), seconds=4)
        ... run the code ...
        assert flaky_proxy.outages and flaky_proxy.outages[0].reset_connections + \
            flaky_proxy.outages[0].refused_connections > 0

For a trainer subprocess: `env = {**os.environ, **s3_server.env()}` (the fake credentials; the endpoint goes
in the config's storage.endpointUrl: `s3_server.endpoint_url` or `flaky_proxy.endpoint_url`).
`flaky_proxy.down(seconds=3)` / `.up()` switch the outage by hand; `arm_outage` triggers it on a request.

The server binds 127.0.0.1 unless LFT_TEST_S3_HOST says otherwise (e2e: the Docker bridge gateway, so
pods can reach it). Objects persist for the session: use a fresh bucket per test (s3_bucket does).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.s3 import FAKE_SECRET_ACCESS_KEY, FlakyProxy, S3Server, aws_env


@dataclass
class Bucket:
    """A fresh bucket on the session's S3 server."""

    name: str
    server: S3Server

    @property
    def endpoint_url(self) -> str:
        return self.server.endpoint_url

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.name}", *[p.strip("/") for p in parts if p]])

    def keys(self, prefix: str = "") -> dict[str, int]:
        """{key: size} of the objects under prefix."""
        return self.server.list_keys(self.name, prefix)

    def get_bytes(self, key: str) -> bytes:
        return self.server.get_bytes(self.name, key)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.server.client().put_object(Bucket=self.name, Key=key, Body=data)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's real S3 server (HTTP, threaded) for the whole session; `.endpoint_url`, `.env()`, `.client()`.

    Also puts the fake AWS_* credentials in os.environ while the session runs (restored at the end), so
    code under test in this process finds them; tests that remove them use monkeypatch.
    """
    server = S3Server(host=os.environ.get("LFT_TEST_S3_HOST", "127.0.0.1")).start()
    with pytest.MonkeyPatch.context() as mp:
        for k, v in aws_env().items():
            mp.setenv(k, v)
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Fake AWS credentials in os.environ for this test only (restored after)."""
    env = aws_env()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return env


@pytest.fixture
def s3_bucket(s3_server: S3Server, aws_credentials: dict[str, str]) -> Bucket:
    """A fresh, empty bucket (random name) on the session server, with fake credentials in the env."""
    return Bucket(name=s3_server.create_bucket(), server=s3_server)


@pytest.fixture
def flaky_proxy(s3_server: S3Server) -> Iterator[FlakyProxy]:
    """A TCP proxy on loopback in front of the S3 server that tests switch down to simulate an outage."""
    proxy = FlakyProxy(s3_server.host, s3_server.port, host=s3_server.host).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def fake_secret() -> str:
    """The fake secret key: assert it never appears in logs, messages or files."""
    return FAKE_SECRET_ACCESS_KEY
