"""A real S3-compatible server and a switchable TCP proxy for tests (no mocks in the client path).

- `S3Server`: moto's standalone server (`moto.server.ThreadedMotoServer`, a real HTTP server speaking the
  S3 REST API) on a free port. Clients reach it over TCP like any S3 endpoint, so it works for code in the
  test process, for trainer subprocesses and (bound to the Docker bridge) for pods.
- `FlakyProxy`: a TCP proxy in front of it that a test can switch off to simulate an outage: "refuse"
  closes the listening socket (clients get ECONNREFUSED) and resets every open connection; "reset"
  keeps listening but resets each connection at once. `arm_outage(marker, seconds)` starts an outage
  the moment a request containing `marker` (e.g. b"/checkpoints/checkpoint-") passes through, so a test
  can hit exactly "the middle of a checkpoint upload" without sleeping and guessing.

Run standalone (e.g. for e2e by hand): `python -m tests.support.s3 --host 0.0.0.0 --port 9000`.
"""

from __future__ import annotations

import argparse
import json
import logging
import select
import socket
import struct
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass

# Fake credentials: moto accepts any key unless IAM auth is switched on (see S3Server.iam_auth).
FAKE_ACCESS_KEY_ID = "AKIATESTFAKEKEY00000"
FAKE_SECRET_ACCESS_KEY = "fake-secret-DO-NOT-LOG-7f3c9a"
FAKE_REGION = "us-east-1"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def aws_env(endpoint_url: str | None = None) -> dict[str, str]:
    """Environment for a process that talks to the test server (merge into a subprocess env).

    AWS_EC2_METADATA_DISABLED keeps botocore from probing the instance-metadata address when
    credentials are absent: tests must not send traffic off the machine.
    """
    env = {
        "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": FAKE_REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    if endpoint_url:
        env["AWS_ENDPOINT_URL_S3"] = endpoint_url
    return env


class S3Server:
    """moto's standalone S3 server in a thread of this process, on host:free port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address=host, port=port or free_port(host), verbose=False)
        self.host = host
        self.port = 0

    def start(self) -> S3Server:
        # werkzeug logs every request at INFO: noise in test failure reports.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server.start()
        self.host, self.port = self._server.get_host_and_port()
        return self

    def stop(self) -> None:
        self._server.stop()

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """AWS_* variables (fake credentials) for a subprocess that talks to this server."""
        return aws_env()

    def client(self, endpoint_url: str | None = None, **creds):
        """A boto3 S3 client for test setup and assertions (independent of the code under test)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=endpoint_url or self.endpoint_url,
            region_name=FAKE_REGION,
            aws_access_key_id=creds.get("key", FAKE_ACCESS_KEY_ID),
            aws_secret_access_key=creds.get("secret", FAKE_SECRET_ACCESS_KEY),
        )

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def list_keys(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """{key: size} of every object under prefix."""
        out: dict[str, int] = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = obj["Size"]
        return out

    def get_bytes(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def _post(self, path: str, body: bytes = b"") -> dict:
        # A non-form content type: moto reads the raw body (Flask would swallow a form body).
        req = urllib.request.Request(self.endpoint_url + path, data=body, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read().decode() or "{}"
        return json.loads(text)

    def set_iam_auth(self, enabled: bool) -> None:
        """Switch moto's IAM authentication on (unknown keys get 403 InvalidAccessKeyId) or off."""
        self._post("/moto-api/reset-auth", b"0" if enabled else b"inf")

    def iam_auth(self):
        """Context manager: IAM authentication on inside the block (restored to off after)."""
        server = self

        class _Ctx:
            def __enter__(self):
                server.set_iam_auth(True)
                return server

            def __exit__(self, *exc):
                server.set_iam_auth(False)

        return _Ctx()


@dataclass
class Outage:
    mode: str
    started: float
    seconds: float | None
    ended: float | None = None
    reset_connections: int = 0
    refused_connections: int = 0
    trigger: bytes | None = None


@dataclass
class _Conn:
    client: socket.socket
    upstream: socket.socket
    closed: bool = False


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a crashed server or a dropped route looks to the client."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class FlakyProxy:
    """TCP proxy on loopback in front of (target_host, target_port) that can be switched down.

    Use `endpoint_url` instead of the server's. While down, new connections are refused (mode
    "refuse": the port is closed) or reset right after accept (mode "reset"); in both modes the
    connections open when the outage starts are reset. `outages` records what happened, so a test
    can assert the outage really hit traffic (`outages[0].reset_connections`, `.refused_connections`).
    """

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1", port: int = 0):
        self.target = (target_host, target_port)
        self.host = host
        self.port = port or free_port(host)
        self.outages: list[Outage] = []
        self.requests_seen = 0
        self._lock = threading.Lock()
        self._conns: list[_Conn] = []
        self._listener: socket.socket | None = None
        self._down_mode: str | None = None
        self._armed: tuple[bytes, float, str] | None = None
        self._rejected: list[bytes] = []
        self.rejected_requests = 0
        self._stopped = threading.Event()
        self._accept_thread: threading.Thread | None = None
        self._timers: list[threading.Timer] = []

    # -- public API -------------------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def is_down(self) -> bool:
        return self._down_mode is not None

    def start(self) -> FlakyProxy:
        self._listen()
        self._accept_thread = threading.Thread(target=self._accept_loop, name="flaky-proxy", daemon=True)
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        for t in self._timers:
            t.cancel()
        self._close_listener()
        self._reset_all()
        if self._accept_thread:
            self._accept_thread.join(timeout=5)

    def down(self, seconds: float | None = None, mode: str = "refuse") -> Outage:
        """Start an outage now; it ends after `seconds` (None: until `up()`)."""
        if mode not in ("refuse", "reset"):
            raise ValueError(f"unknown outage mode {mode!r}")
        with self._lock:
            outage = Outage(mode=mode, started=time.monotonic(), seconds=seconds)
            self.outages.append(outage)
            self._down_mode = mode
        if mode == "refuse":
            self._close_listener()
        outage.reset_connections += self._reset_all()
        if seconds is not None:
            timer = threading.Timer(seconds, self.up)
            timer.daemon = True
            self._timers.append(timer)
            timer.start()
        return outage

    def up(self) -> None:
        """End the outage: accept and forward again."""
        with self._lock:
            if self._down_mode is None:
                return
            mode, self._down_mode = self._down_mode, None
            self.outages[-1].ended = time.monotonic()
        if mode == "refuse" and not self._stopped.is_set():
            self._listen()

    def arm_outage(self, marker: bytes, seconds: float, mode: str = "refuse") -> None:
        """Start an outage of `seconds` when a client sends bytes containing `marker` (once).

        The request carrying the marker is not forwarded: it fails like a request cut mid-flight.
        """
        with self._lock:
            self._armed = (marker, seconds, mode)

    def reject_requests(self, marker: bytes) -> None:
        """Cut every request containing `marker` (e.g. the PUTs of one checkpoint), for good, while all
        other requests go through: a failure that does not depend on how fast the client is."""
        with self._lock:
            self._rejected.append(marker)

    def wait_outage_over(self, timeout: float = 60) -> bool:
        """Wait until an armed/started outage has happened and ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                done = bool(self.outages) and self._down_mode is None and self._armed is None
            if done:
                return True
            time.sleep(0.05)
        return False

    # -- internals --------------------------------------------------------------------------
    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # The port can linger briefly after close; retry the bind for a moment.
        for _ in range(100):
            try:
                sock.bind((self.host, self.port))
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"flaky proxy could not re-bind {self.host}:{self.port}")
        sock.listen(128)
        sock.settimeout(0.1)
        with self._lock:
            self._listener = sock

    def _close_listener(self) -> None:
        with self._lock:
            sock, self._listener = self._listener, None
        if sock is not None:
            # shutdown() stops a listening socket at once on Linux, even while accept() polls it.
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _reset_all(self) -> int:
        with self._lock:
            conns, self._conns = self._conns, []
        n = 0
        for c in conns:
            if not c.closed:
                n += 1
            c.closed = True
            _reset(c.client)
            _reset(c.upstream)
        return n

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            with self._lock:
                sock = self._listener
            if sock is None:
                time.sleep(0.02)
                continue
            try:
                client, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            if self._down_mode is not None:
                # "reset" mode (or a connection that raced a "refuse" switch): drop it at once.
                with self._lock:
                    if self.outages:
                        self.outages[-1].refused_connections += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            conn = _Conn(client, upstream)
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._pump, args=(conn,), daemon=True).start()

    def _check_marker(self, window: bytes) -> bool:
        with self._lock:
            armed = self._armed
            if armed is None or armed[0] not in window:
                return False
            self._armed = None
        marker, seconds, mode = armed
        outage = self.down(seconds=seconds, mode=mode)
        outage.trigger = marker
        return True

    def _pump(self, conn: _Conn) -> None:
        """Forward both directions of one connection until either side closes."""
        tail = b""
        socks = [conn.client, conn.upstream]
        try:
            while not conn.closed:
                try:
                    readable, _, _ = select.select(socks, [], [], 0.2)
                except (OSError, ValueError):
                    break
                for s in readable:
                    try:
                        data = s.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        raise EOFError
                    if s is conn.client:
                        window = tail + data
                        if data[:4] in (b"GET ", b"PUT ", b"POST", b"HEAD", b"DELE"):
                            self.requests_seen += 1
                        if self._armed is not None and self._check_marker(window):
                            raise EOFError
                        if self._rejected and any(m in window for m in self._rejected):
                            self.rejected_requests += 1
                            raise EOFError
                        tail = window[-256:]
                        conn.upstream.sendall(data)
                    else:
                        conn.client.sendall(data)
        except (EOFError, OSError):
            pass
        finally:
            if not conn.closed:
                conn.closed = True
                for s in socks:
                    try:
                        s.close()
                    except OSError:
                        pass
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)


def main() -> None:  # pragma: no cover - manual use
    ap = argparse.ArgumentParser(description="Run moto's S3 server for manual/e2e use.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--bucket", action="append", default=[])
    args = ap.parse_args()
    server = S3Server(args.host, args.port).start()
    for b in args.bucket:
        server.create_bucket(b)
    print(json.dumps({"endpoint_url": server.endpoint_url, "buckets": args.bucket}), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":  # pragma: no cover
    main()


__all__ = ["FAKE_ACCESS_KEY_ID", "FAKE_SECRET_ACCESS_KEY", "FlakyProxy", "Outage", "S3Server", "aws_env", "free_port"]
