"""Experiment trackers for tests, real ones: an `mlflow server` (sqlite backend) in a subprocess on a free port,
a reader of TensorBoard event files (TFRecord framing with its CRCs, tensorboardX's Event protobuf), a reader of
W&B offline run files (wandb's own record scanner), and the environment the trainer sets, restored after a test.

The MLflow server runs from its own virtualenv (hack/mlflow-venv.sh, pinned in tests/requirements-mlflow-server.txt):
the full `mlflow` package pins pyarrow below the version the trainer's stack uses, so it is kept out of .venv;
.venv has the client (mlflow-skinny), as the trainer image does.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.support.s3 import free_port

MLFLOW_VENV = Path(os.environ.get("LFT_MLFLOW_VENV", "/var/cache/lft/mlflow-venv"))
# Everything tracking_env sets, and what mlflow/wandb read: restored after each test.
TRACKING_ENV_VARS = (
    "TENSORBOARD_LOGGING_DIR", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "HF_MLFLOW_LOG_ARTIFACTS",
    "MLFLOW_FLATTEN_PARAMS", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
    "WANDB_PROJECT", "WANDB_MODE", "WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR",
    "WANDB_CONSOLE", "WANDB_SILENT", "WANDB_LOG_MODEL", "WANDB_WATCH", "WANDB_RUN_GROUP", "WANDB_ENTITY",
    "WANDB_BASE_URL", "WANDB_API_KEY",
)


def isolate_tracking_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer sets these in os.environ (tracking.apply_env): put them back as they were after the test."""
    for name in TRACKING_ENV_VARS:
        monkeypatch.setenv(name, "")  # recorded: undone at teardown whatever the trainer set
        monkeypatch.delenv(name)


# --- TensorBoard ---------------------------------------------------------------------------------
def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_scalars(event_dir: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of every scalar in the event files under event_dir; a bad CRC fails the test."""
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, dict[int, float]] = {}
    for path in sorted(event_dir.rglob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos + 12 <= len(data):
            header = data[pos:pos + 8]
            (length,) = struct.unpack("<Q", header)
            assert struct.unpack("<I", data[pos + 8:pos + 12])[0] == _masked(_crc32c(header)), f"{path}: header CRC"
            body = data[pos + 12:pos + 12 + length]
            (crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
            assert crc == _masked(_crc32c(body)), f"{path}: record CRC at byte {pos}"
            pos += 16 + length
            event = Event()
            event.ParseFromString(body)
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, {})[event.step] = value.simple_value
        assert pos == len(data), f"{path}: {len(data) - pos} trailing bytes"
    return out


# --- MLflow ----------------------------------------------------------------------------------------
def mlflow_executable() -> str:
    exe = MLFLOW_VENV / "bin" / "mlflow"
    if exe.exists():
        return str(exe)
    message = f"no MLflow server at {exe}: run hack/mlflow-venv.sh (make venv does)"
    if os.environ.get("LFT_REQUIRE_TOOLS") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class MlflowServer:
    """`mlflow server` with a sqlite backend and a local artifact root, on host:free port."""

    def __init__(self, root: Path, host: str = "127.0.0.1"):
        self.root, self.host, self.port = root, host, free_port(host)
        self.log = root / "mlflow-server.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 120) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = [mlflow_executable(), "server", "--host", self.host, "--port", str(self.port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
               "--default-artifact-root", (self.root / "artifacts").as_uri()]
        # A throwaway test server that pods reach at the bridge address: its Host-header/CORS guard is off.
        env = {**os.environ, "MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE": "true"}
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer in {timeout:.0f} s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)  # its own session: the server and its workers
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(5)

    def api(self, endpoint: str, body: dict | None = None, **query) -> dict:
        url = f"{self.url}/api/2.0/mlflow/{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as r:
            return json.loads(r.read())

    def runs(self, experiment_name: str) -> list[dict]:
        experiment = self.api("experiments/get-by-name", experiment_name=experiment_name)["experiment"]
        return self.api("runs/search", {"experiment_ids": [experiment["experiment_id"]]}).get("runs", [])

    def metric_history(self, run_id: str, key: str) -> dict[int, float]:
        history = self.api("metrics/get-history", run_id=run_id, metric_key=key, max_results=10000)
        return {int(m["step"]): float(m["value"]) for m in history.get("metrics", [])}


# --- W&B offline -----------------------------------------------------------------------------------
_WANDB_BLOCK = 32768  # the run file: a 7-byte header, then LevelDB-log blocks of records (7-byte headers)


def _wandb_records(data: bytes) -> list[bytes]:
    import zlib

    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), "not a W&B run file"
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        left = _WANDB_BLOCK - pos % _WANDB_BLOCK
        if left < 7:  # the block's tail is padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:  # zero padding to the block's end
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        assert crc == zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF, f"record CRC at byte {pos}"
        pos += 7 + length
        pending += chunk
        if kind in (1, 4):  # FULL or LAST
            records.append(pending)
            pending = b""
    return records


def read_wandb_history(run_file: Path) -> list[dict]:
    """The history rows (the logged values by key) of a W&B offline run file (run-<id>.wandb), decoded with wandb's
    own protobuf (its Python reader of the framing is gone in wandb 0.31, so the framing is read here)."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for data in _wandb_records(run_file.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows
