"""Progress reporting: the Reporter holds the run's Progress, Metrics, latest checkpoint and checkpoint
health; the training loop (a TrainerCallback) and the checkpoint uploader call its transitions, and sinks
publish each one: a JSON line on stdout, and a rate-limited merge patch of the LoRAFineTune's status
subresource (status.progress / metrics / latestCheckpoint / checkpointHealth / performance / artifacts).

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
from lft_api.contract import Artifacts, CheckpointHealth, CheckpointRef, Metrics, Performance, Progress

from ..security.scrubbing import scrub, scrub_tree
from ..settings import DEFAULT_MIN_INTERVAL, Settings
from .history import eval_loss_change, perplexity

log = logging.getLogger(__name__)

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass(frozen=True)
class ProgressEvent:
    """One transition, with a snapshot of the Reporter's models (not copies of their fields)."""

    kind: str  # start | plan | log | eval | checkpoint | checkpoint_failed | artifacts | end
    progress: Progress
    metrics: Metrics
    checkpoint: CheckpointRef | None = None
    health: CheckpointHealth | None = None
    performance: Performance | None = None
    artifacts: Artifacts | None = None

    @property
    def forced(self) -> bool:
        """Events that always reach the status, whatever the rate limit."""
        return self.kind in FORCED_KINDS

    def to_json(self) -> dict[str, Any]:
        p, m = self.progress, self.metrics
        out: dict[str, Any] = {
            "event": "progress", "kind": self.kind, "step": p.step, "totalSteps": p.total_steps,
            "epoch": p.epoch, "percent": p.percent, "loss": m.loss, "evalLoss": m.eval_loss,
            "learningRate": m.learning_rate, "gradNorm": m.grad_norm, "tokensPerSecond": p.tokens_per_second,
            "etaSeconds": p.eta_seconds,
        }
        for key, value in (("evalLossBefore", m.eval_loss_before), ("perplexity", m.perplexity),
                           ("evalLossChange", m.eval_loss_change)):
            if value is not None:
                out[key] = value
        if p.resumed_from_step is not None:
            out["resumedFromStep"] = p.resumed_from_step
        if self.checkpoint is not None:
            out["checkpoint"] = self.checkpoint.to_wire()
        if self.health is not None and self.kind in ("checkpoint", "checkpoint_failed"):
            out["checkpointHealth"] = self.health.to_wire()
        if self.artifacts is not None and self.kind in ("artifacts", "end"):
            out["artifacts"] = self.artifacts.to_wire()
        if self.performance is not None:
            perf = self.performance
            if self.kind == "plan":
                out["performance"] = perf.to_wire()
            else:
                out.update({k: v for k, v in (("tflops", perf.tflops), ("mfuPercent", perf.mfu_percent),
                                              ("peakMemoryGiB", perf.peak_memory_gib)) if v is not None})
        return out

    def status_body(self) -> dict[str, Any]:
        return contract.status_patch(self.progress, self.metrics, self.checkpoint, self.health, self.performance,
                                     self.artifacts)


FORCED_KINDS = ("eval", "checkpoint", "checkpoint_failed", "end", "start", "plan", "artifacts")


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


class StdoutSink:
    def __init__(self, stream=None):
        self.stream = stream

    def emit(self, event: ProgressEvent) -> None:
        stream = self.stream or sys.stdout
        stream.write(json.dumps(event.to_json(), separators=(",", ":")) + "\n")
        stream.flush()


class KubeStatusClient:
    """Merge-patches one LoRAFineTune's status subresource with the pod's ServiceAccount token, as field
    manager lft-trainer, each patch with the run's UID (status.trainerUid; the operator ignores trainer
    fields under another UID), every string scrubbed of secrets."""

    def __init__(self, name: str, namespace: str, api_url: str | None = None, sa_dir: str = SA_DIR,
                 timeout: float = 5.0, uid: str | None = None, settings: Settings | None = None):
        settings = settings or Settings.from_environ()
        self.name, self.namespace, self.timeout, self.sa_dir = name, namespace, timeout, sa_dir
        self.uid = uid if uid is not None else settings.uid
        if api_url is None:
            api_url = settings.kube_api_url
        if api_url is None:
            host, port = settings.kubernetes_service_host, settings.kubernetes_service_port
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
                f"{contract.PLURAL}/{self.name}/status?fieldManager={contract.TRAINER_FIELD_MANAGER}")

    def _token(self) -> str | None:
        # Read each time: the kubelet rotates projected tokens.
        try:
            with open(os.path.join(self.sa_dir, "token")) as f:
                return f.read().strip()
        except OSError:
            return None

    def patch(self, body: dict) -> None:
        body = scrub_tree({**body, "status": {**body.get("status", {}), **({"trainerUid": self.uid} if self.uid else {})}})
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
        self._error_log = RateLimiter(60.0, clock)  # a failed patch is logged at most once a minute
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
                if self._error_log.allow():
                    log.warning("status patch failed (training goes on): %s", _describe_http_error(exc))


def _describe_http_error(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    return f"HTTP {code}" if code else f"{type(exc).__name__}: {exc}"[:300]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reporter:
    """The run's current Progress, Metrics, latest checkpoint and checkpoint health, changed only through
    one method per transition; each transition that is reported goes to every sink as a ProgressEvent."""

    def __init__(self, sinks: list[Sink], total_steps: int = 0):
        self.sinks = sinks
        self.progress = Progress.build(0, total_steps)
        self.metrics = Metrics()
        self.latest_checkpoint: CheckpointRef | None = None
        self.health: CheckpointHealth | None = None  # None until the first checkpoint upload ends
        self.performance: Performance | None = None  # the plan, then the measured throughput
        self.artifacts: Artifacts | None = None  # URIs of the files written so far
        self._lock = threading.RLock()  # the checkpoint uploader's thread reports too

    # -- transitions ----------------------------------------------------------------------
    def resumed(self, step: int | None) -> None:
        with self._lock:
            self._set_progress(step=step or 0, resumed_from_step=step)

    def planned(self, total_steps: int) -> None:
        with self._lock:
            self._set_progress(total_steps=total_steps)

    def performance_planned(self, performance: Performance) -> None:
        """The performance plan and memory estimate, before the model is loaded."""
        with self._lock:
            self.performance = performance
        self._emit("plan")

    def throughput_measured(self, tokens_per_second: float | None, tflops: float | None, mfu_percent: float | None,
                            peak_memory_gib: float | None) -> None:
        """Steady-state training throughput (the next log event carries it)."""
        with self._lock:
            base = self.performance or Performance()
            self.performance = base.model_copy(update=dict(
                tokens_per_second=_round(tokens_per_second, 1), tflops=_round(tflops, 1),
                mfu_percent=_round(mfu_percent, 1), peak_memory_gib=_round(peak_memory_gib, 2)))

    def eval_before_restored(self, eval_loss_before: float | None) -> None:
        """The step-0 eval loss of an earlier attempt, kept in the checkpoint resumed from."""
        with self._lock:
            self._set_metrics(eval_loss_before=_round(eval_loss_before, 6))

    def advanced(self, step: int, total_steps: int, epoch: float | None, tokens_per_second: float | None = None,
                 eta_seconds: int | None = None) -> None:
        with self._lock:
            changes: dict[str, Any] = dict(step=step, total_steps=total_steps or self.progress.total_steps,
                                           epoch=_round(epoch, 4))
            if tokens_per_second is not None:
                changes["tokens_per_second"] = _round(tokens_per_second, 1)
            if eta_seconds is not None:
                changes["eta_seconds"] = eta_seconds
            self._set_progress(**changes)

    def step_logged(self, loss: float | None, learning_rate: float | None, grad_norm: float | None) -> None:
        with self._lock:
            # Only what this log line has; a NaN loss shows as null rather than the previous value.
            given = {k: v for k, v in (("loss", loss), ("learning_rate", learning_rate), ("grad_norm", grad_norm))
                     if v is not None}
            self._set_metrics(**{k: _round(v, 6) if k != "learning_rate" else v for k, v in given.items()})
        if loss is not None:
            self._emit("log")

    def evaluated(self, eval_loss: float) -> None:
        with self._lock:
            loss = _round(eval_loss, 6)
            first = self.progress.step == 0 and self.metrics.eval_loss_before is None
            self._set_metrics(eval_loss=loss, **({"eval_loss_before": loss} if first else {}))
        self._emit("eval")

    def checkpoint_uploaded(self, ref: CheckpointRef) -> None:
        """CheckpointUploader's on_uploaded hook (runs in the uploader's thread)."""
        with self._lock:
            self.latest_checkpoint = ref
            self.health = CheckpointHealth(healthy=True, failed_uploads=0, last_uploaded_step=ref.step,
                                           updated_at=_now())
        self._emit("checkpoint")

    def checkpoint_failed(self, step: int, error: str) -> None:
        """CheckpointUploader's on_failed hook: the upload failed after the storage retries; training goes on."""
        with self._lock:
            failed = (self.health.failed_uploads if self.health else 0) + 1
            last = self.latest_checkpoint.step if self.latest_checkpoint else None
            self.health = CheckpointHealth(healthy=False, message=scrub(f"checkpoint {step}: {error}")[:1000],
                                           failed_uploads=failed, last_uploaded_step=last, updated_at=_now())
        log.warning("checkpoint upload failed (%d in a row); training goes on: %s", failed, self.health.message)
        self._emit("checkpoint_failed")

    def artifacts_written(self, written: Artifacts) -> None:
        """Files written under the output (the history writer's thread, or publish); reported when new."""
        with self._lock:
            merged = (self.artifacts or Artifacts()).merged_with(written)
            if merged == self.artifacts:
                return
            self.artifacts = merged
        self._emit("artifacts")

    def finished(self, step: int, eval_loss: float | None, eval_loss_before: float | None = None) -> None:
        """The end: the final eval loss, its perplexity and its change since before step 1 (from
        eval_loss_before when given, unrounded; else from the metrics' 4-decimal one)."""
        with self._lock:
            self._set_progress(step=step)
            before = eval_loss_before if eval_loss_before is not None else self.metrics.eval_loss_before
            self._set_metrics(eval_loss=_round(eval_loss, 6), perplexity=perplexity(eval_loss),
                              eval_loss_change=eval_loss_change(before, eval_loss))
        self._emit("end")

    # -- internals ------------------------------------------------------------------------
    def _set_progress(self, **changes: Any) -> None:
        fields = self.progress.model_dump(exclude={"percent", "display", "eta"})
        fields.update(changes)
        self.progress = Progress.build(fields.pop("step"), fields.pop("total_steps"), **fields)

    def _set_metrics(self, **changes: Any) -> None:
        # Validated (not model_copy): Metrics rounds to the 4 decimals that `kubectl get` shows.
        self.metrics = Metrics.model_validate({**self.metrics.model_dump(), **changes})

    def event(self, kind: str) -> ProgressEvent:
        with self._lock:
            progress = self.progress.model_copy(update={"updated_at": _now()})
            return ProgressEvent(kind, progress, self.metrics, self.latest_checkpoint, self.health, self.performance,
                                 self.artifacts)

    def _emit(self, kind: str) -> None:
        ev = self.event(kind)
        for sink in self.sinks:
            try:
                sink.emit(ev)
            except Exception as exc:  # a sink must never stop training
                log.warning("progress sink %s failed: %s", type(sink).__name__, exc)


def make_reporter(name: str | None = None, namespace: str | None = None, stream=None,
                  settings: Settings | None = None) -> Reporter:
    """stdout always; the status sink when the operator passed the resource's name and namespace."""
    settings = settings or Settings.from_environ()
    sinks: list[Sink] = [StdoutSink(stream)]
    name = name if name is not None else settings.name
    namespace = namespace if namespace is not None else settings.namespace
    if name and namespace:
        try:
            client = KubeStatusClient(name, namespace, settings=settings)
            sinks.append(StatusSink(client.patch, settings.status_min_interval))
        except Exception as exc:
            log.warning("status reporting disabled: %s", exc)
    return Reporter(sinks)


# ---------------------------------------------------------------------------------------------
# the TrainerCallback (imports transformers lazily: this module is also used without torch)
# ---------------------------------------------------------------------------------------------
def as_trainer_callback(cls: type) -> type:
    """cls with transformers' TrainerCallback as its base (the no-op events it does not define), composed at first
    use: the callback classes are written at module level, and importing their modules needs no transformers."""
    if cls not in _COMPOSED:
        from transformers import TrainerCallback

        _COMPOSED[cls] = type(cls.__name__, (cls, TrainerCallback), {"__doc__": cls.__doc__})
    return _COMPOSED[cls]


_COMPOSED: dict[type, type] = {}


class ProgressCallback:
    """Trainer logs -> progress events (rank 0 only). Tokens/s counts non-padding tokens since this
    process started training (a resumed run does not count the steps it skipped). A TrainerCallback through
    as_trainer_callback (make_callback)."""

    def __init__(self, reporter: Reporter, clock: Callable[[], float] = time.monotonic):
        self.reporter, self.clock = reporter, clock
        self._t0: float | None = None
        self._step0 = 0
        self._tokens0 = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = self.clock()
        self._step0 = state.global_step
        self._tokens0 = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        self.reporter.advanced(state.global_step, state.max_steps, state.epoch)

    def _advance(self, state) -> None:
        rate = eta = None
        if self._t0 is not None:
            elapsed = self.clock() - self._t0
            done = state.global_step - self._step0
            tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0) - self._tokens0
            if elapsed > 0 and tokens > 0:
                rate = tokens / elapsed
            if done > 0 and elapsed > 0:
                eta = int(round(max(0, state.max_steps - state.global_step) * elapsed / done))
        self.reporter.advanced(state.global_step, state.max_steps, state.epoch, rate, eta)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        self._advance(state)
        grad_norm = logs.get("grad_norm")
        self.reporter.step_logged(_float(logs.get("loss")), _float(logs.get("learning_rate")), _float(grad_norm))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or not metrics or "eval_loss" not in metrics:
            return
        self._advance(state)
        self.reporter.evaluated(float(metrics["eval_loss"]))


def make_callback(reporter: Reporter, clock: Callable[[], float] = time.monotonic):
    return as_trainer_callback(ProgressCallback)(reporter, clock)


def _float(v: Any) -> float | None:
    return None if v is None else float(v)
