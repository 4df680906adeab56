"""Progress reporting: a TrainerCallback turns the trainer's logs into progress events, and sinks
publish them: one JSON line per event on stdout, and a rate-limited merge patch of the
LoRAFineTune's status subresource (status.progress / status.metrics / status.latestCheckpoint).

A sink that fails is logged (at most once a minute) and never stops training.
"""

from __future__ import annotations

import json
import logging
import math
import os
import ssl
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from lft_api import contract
from lft_api.contract import CheckpointRef, Metrics, Progress

log = logging.getLogger("lft_trainer.progress")

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_MIN_INTERVAL = 5.0
ENV_KUBE_API = "LFT_KUBE_API_URL"  # override of the in-cluster API server URL (tests, out-of-cluster runs)


@dataclass
class ProgressEvent:
    kind: str  # start | log | eval | checkpoint | end
    step: int
    total_steps: int
    epoch: float | None = None
    loss: float | None = None
    eval_loss: float | None = None
    eval_loss_before: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    tokens_per_second: float | None = None
    eta_seconds: int | None = None
    resumed_from_step: int | None = None
    checkpoint: CheckpointRef | None = None

    @property
    def percent(self) -> float | None:
        if self.total_steps <= 0:
            return None
        return round(100.0 * min(self.step, self.total_steps) / self.total_steps, 1)

    @property
    def forced(self) -> bool:
        """Events that always reach the status, whatever the rate limit."""
        return self.kind in ("eval", "checkpoint", "end", "start")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event": "progress", "kind": self.kind, "step": self.step, "totalSteps": self.total_steps,
            "epoch": _round(self.epoch, 4), "percent": self.percent, "loss": _round(self.loss, 6),
            "evalLoss": _round(self.eval_loss, 6), "learningRate": self.learning_rate,
            "gradNorm": _round(self.grad_norm, 6), "tokensPerSecond": _round(self.tokens_per_second, 1),
            "etaSeconds": self.eta_seconds,
        }
        if self.eval_loss_before is not None:
            out["evalLossBefore"] = _round(self.eval_loss_before, 6)
        if self.resumed_from_step is not None:
            out["resumedFromStep"] = self.resumed_from_step
        if self.checkpoint is not None:
            out["checkpoint"] = self.checkpoint.to_wire()
        return out

    def status_body(self, now: datetime | None = None) -> dict[str, Any]:
        # Progress.build derives percent and the display strings the printer columns show.
        progress = Progress.build(
            self.step, self.total_steps, epoch=_round(self.epoch, 4),
            eta_seconds=self.eta_seconds, tokens_per_second=_round(self.tokens_per_second, 1),
            resumed_from_step=self.resumed_from_step,
            updated_at=(now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        metrics = Metrics(loss=_round(self.loss, 6), eval_loss=_round(self.eval_loss, 6),
                          eval_loss_before=_round(self.eval_loss_before, 6), learning_rate=self.learning_rate,
                          grad_norm=_round(self.grad_norm, 6))
        return contract.status_patch(progress, metrics, self.checkpoint)


def _round(v: float | None, nd: int) -> float | None:
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return round(float(v), nd)


class Sink(Protocol):
    def emit(self, event: ProgressEvent) -> None: ...


class RateLimiter:
    """At most one pass per min_interval seconds; forced passes always go (and restart the interval)."""

    def __init__(self, min_interval: float, clock: Callable[[], float] = time.monotonic):
        self.min_interval = min_interval
        self.clock = clock
        self._last: float | None = None

    def allow(self, force: bool = False) -> bool:
        now = self.clock()
        if force or self._last is None or now - self._last >= self.min_interval:
            self._last = now
            return True
        return False


def min_interval_from_env() -> float:
    raw = os.environ.get(contract.ENV_STATUS_MIN_INTERVAL)
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_MIN_INTERVAL
    except ValueError:
        return DEFAULT_MIN_INTERVAL


class StdoutSink:
    def __init__(self, stream=None):
        self.stream = stream

    def emit(self, event: ProgressEvent) -> None:
        stream = self.stream or sys.stdout
        stream.write(json.dumps(event.to_json(), separators=(",", ":")) + "\n")
        stream.flush()


class KubeStatusClient:
    """Merge-patches one LoRAFineTune's status subresource with the pod's ServiceAccount token."""

    def __init__(self, name: str, namespace: str, api_url: str | None = None, sa_dir: str = SA_DIR,
                 timeout: float = 5.0):
        self.name, self.namespace, self.timeout, self.sa_dir = name, namespace, timeout, sa_dir
        if api_url is None:
            api_url = os.environ.get(ENV_KUBE_API)
        if api_url is None:
            host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                raise RuntimeError("not in a cluster: KUBERNETES_SERVICE_HOST is unset")
            host = f"[{host}]" if ":" in host else host
            api_url = f"https://{host}:{port}"
        self.api_url = api_url.rstrip("/")
        ca = os.path.join(sa_dir, "ca.crt")
        self._ssl = ssl.create_default_context(cafile=ca) if os.path.exists(ca) else None

    @property
    def url(self) -> str:
        return (f"{self.api_url}/apis/{contract.API_GROUP}/{contract.API_VERSION}/namespaces/{self.namespace}/"
                f"{contract.PLURAL}/{self.name}/status")

    def _token(self) -> str | None:
        # Read each time: the kubelet rotates projected tokens.
        try:
            with open(os.path.join(self.sa_dir, "token")) as f:
                return f.read().strip()
        except OSError:
            return None

    def patch(self, body: dict) -> None:
        headers = {"Content-Type": "application/merge-patch+json", "Accept": "application/json"}
        token = self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), method="PATCH", headers=headers)
        kwargs = {"context": self._ssl} if self.url.startswith("https") and self._ssl else {}
        with urllib.request.urlopen(req, timeout=self.timeout, **kwargs) as resp:
            resp.read()


class StatusSink:
    """Rate-limited status patches. Non-forced events in between are dropped (the next patch carries
    the newest values); eval, checkpoint, start and end events always go."""

    def __init__(self, patch: Callable[[dict], None], min_interval: float = DEFAULT_MIN_INTERVAL,
                 clock: Callable[[], float] = time.monotonic):
        self._patch = patch
        self.limiter = RateLimiter(min_interval, clock)
        self.patches = 0
        self.failures = 0
        self._last_error_log = -math.inf
        self._clock = clock
        self._lock = threading.Lock()  # the checkpoint uploader's thread emits too

    def emit(self, event: ProgressEvent) -> None:
        with self._lock:
            if not self.limiter.allow(force=event.forced):
                return
            try:
                self._patch(event.status_body())
                self.patches += 1
            except Exception as exc:
                self.failures += 1
                if self._clock() - self._last_error_log >= 60:
                    self._last_error_log = self._clock()
                    log.warning("status patch failed (training goes on): %s", _describe_http_error(exc))


def _describe_http_error(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    return f"HTTP {code}" if code else f"{type(exc).__name__}: {exc}"[:300]


class Reporter:
    """Fans events out to sinks; remembers the latest metrics so every event carries the full picture."""

    def __init__(self, sinks: list[Sink], total_steps: int = 0):
        self.sinks = sinks
        self.total_steps = total_steps
        self.step = 0
        self.epoch: float | None = None
        self.loss: float | None = None
        self.eval_loss: float | None = None
        self.eval_loss_before: float | None = None
        self.learning_rate: float | None = None
        self.grad_norm: float | None = None
        self.tokens_per_second: float | None = None
        self.eta_seconds: int | None = None
        self.resumed_from_step: int | None = None
        self.latest_checkpoint: CheckpointRef | None = None
        self._lock = threading.Lock()

    def event(self, kind: str, checkpoint: CheckpointRef | None = None) -> ProgressEvent:
        return ProgressEvent(
            kind=kind, step=self.step, total_steps=self.total_steps, epoch=self.epoch, loss=self.loss,
            eval_loss=self.eval_loss, eval_loss_before=self.eval_loss_before, learning_rate=self.learning_rate,
            grad_norm=self.grad_norm, tokens_per_second=self.tokens_per_second, eta_seconds=self.eta_seconds,
            resumed_from_step=self.resumed_from_step, checkpoint=checkpoint or self.latest_checkpoint,
        )

    def emit(self, kind: str, checkpoint: CheckpointRef | None = None) -> None:
        with self._lock:
            if checkpoint is not None:
                self.latest_checkpoint = checkpoint
            ev = self.event(kind, checkpoint)
        for sink in self.sinks:
            try:
                sink.emit(ev)
            except Exception as exc:  # a sink must never stop training
                log.warning("progress sink %s failed: %s", type(sink).__name__, exc)

    def checkpoint_uploaded(self, ref: CheckpointRef) -> None:
        """CheckpointUploader's on_uploaded hook (runs in the uploader's thread)."""
        self.emit("checkpoint", checkpoint=ref)


def make_reporter(name: str | None = None, namespace: str | None = None, stream=None) -> Reporter:
    """stdout always; the status sink when the operator passed the resource's name and namespace."""
    sinks: list[Sink] = [StdoutSink(stream)]
    name = name if name is not None else os.environ.get(contract.ENV_RESOURCE_NAME)
    namespace = namespace if namespace is not None else os.environ.get(contract.ENV_RESOURCE_NAMESPACE)
    if name and namespace:
        try:
            client = KubeStatusClient(name, namespace)
            sinks.append(StatusSink(client.patch, min_interval_from_env()))
        except Exception as exc:
            log.warning("status reporting disabled: %s", exc)
    return Reporter(sinks)


# ---------------------------------------------------------------------------------------------
# the TrainerCallback (imports transformers lazily: this module is also used without torch)
# ---------------------------------------------------------------------------------------------
def make_callback(reporter: Reporter, clock: Callable[[], float] = time.monotonic):
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        """Trainer logs -> progress events (rank 0 only). Tokens/s counts non-padding tokens since this
        process started training (a resumed run does not count the steps it skipped)."""

        def __init__(self):
            self._t0: float | None = None
            self._step0 = 0
            self._tokens0 = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self._t0 = clock()
            self._step0 = state.global_step
            self._tokens0 = int(getattr(state, "num_input_tokens_seen", 0) or 0)
            reporter.total_steps = state.max_steps
            reporter.step = state.global_step

        def _update(self, state) -> None:
            reporter.step = state.global_step
            reporter.total_steps = state.max_steps or reporter.total_steps
            reporter.epoch = state.epoch
            if self._t0 is None:
                return
            elapsed = clock() - self._t0
            done = state.global_step - self._step0
            tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0) - self._tokens0
            if elapsed > 0 and tokens > 0:
                reporter.tokens_per_second = tokens / elapsed
            if done > 0 and elapsed > 0:
                reporter.eta_seconds = int(round(max(0, state.max_steps - state.global_step) * elapsed / done))

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            self._update(state)
            if "loss" in logs:
                reporter.loss = float(logs["loss"])
            if "learning_rate" in logs:
                reporter.learning_rate = float(logs["learning_rate"])
            if "grad_norm" in logs and logs["grad_norm"] is not None:
                reporter.grad_norm = float(logs["grad_norm"])
            if "loss" in logs:
                reporter.emit("log")

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if not state.is_world_process_zero or not metrics or "eval_loss" not in metrics:
                return
            self._update(state)
            reporter.eval_loss = float(metrics["eval_loss"])
            if reporter.eval_loss_before is None and state.global_step == 0:
                reporter.eval_loss_before = reporter.eval_loss
            reporter.emit("eval")

    return ProgressCallback()
