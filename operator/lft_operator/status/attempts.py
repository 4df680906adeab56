"""Attempts: one per trainer pod, folded into status.attemptHistory (pure).

Failures count toward backoffLimit as the Job controller counts them (its podFailurePolicy included): a pod
that ended Failed, neither deleted nor disrupted. Pods deleted on purpose (suspend, kubectl delete pod) and
disrupted ones (DisruptionTarget: eviction, preemption, drain; the Job's podFailurePolicy ignores them) are
"Stopped". The Job controller keeps the count that decides (status.failed, backoffLimit); this one is the
status's account of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, overload

from lft_api import contract
from lft_api.conditions import Reason
from lft_api.contract import TerminationMessage

from ..views import PodView

MAX_FINISHED_HISTORY = 10  # attempts kept in status once their pods are gone
MAX_MESSAGE = 512


@overload
def truncate(text: str, limit: int = ...) -> str: ...
@overload
def truncate(text: None, limit: int = ...) -> None: ...


def truncate(text: str | None, limit: int = MAX_MESSAGE) -> str | None:
    if text is None:
        return None
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 12] + " [truncated]"


def attempt_phase(pod: PodView) -> str:
    if pod.terminated:
        if pod.exit_code == 0 or (pod.exit_code is None and pod.phase == "Succeeded"):
            return "Succeeded"
        return "Stopped" if pod.deleted or pod.disrupted else "Failed"
    if pod.running or pod.phase == "Running":
        return "Running"
    return "Pending"


def pod_ending(pod: PodView) -> dict[str, Any]:
    """exitCode, reason and message of a finished pod: the trainer's termination message first."""
    parsed = TerminationMessage.decode(pod.term_message)
    if parsed is not None:
        reason, message = parsed.reason, parsed.message
    else:
        reason = pod.term_reason or pod.pod_reason or (Reason.COMPLETED if pod.exit_code == 0 else Reason.ERROR)
        message = pod.term_message or pod.pod_message or ""
    if pod.disrupted and attempt_phase(pod) != "Succeeded":
        reason, message = pod.disrupted, pod.disrupted_message or message
    out = {"exitCode": pod.exit_code, "reason": reason, "message": truncate(message), "finishTime": pod.finished_at}
    return {k: v for k, v in out.items() if v not in (None, "")}


def outcome(record: dict[str, Any]) -> str:
    """succeeded | invalid_input | preempted | error | stopped | running."""
    phase = record.get("phase")
    if phase == "Succeeded":
        return "succeeded"
    if phase == "Stopped":
        return "stopped"
    if phase != "Failed":
        return "running"
    return contract.outcome_for_exit_code(record.get("exitCode"))


@dataclass
class AttemptUpdate:
    history: list[dict[str, Any]]
    attempts: int
    failed_attempts: int
    started: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)  # newly Failed records (counted)
    succeeded: tuple[dict[str, Any], PodView] | None = None


def update_attempts(
    history: list[dict[str, Any]], attempts: int, failed_attempts: int, pods: list[PodView], now: str
) -> AttemptUpdate:
    """Fold the pods into the attempt history.

    A pod becomes an attempt (numbered, counted in `attempts`) once it started or ended; a pod deleted
    before it started (e.g. the replacement the Job controller makes while the operator stops the
    Job) leaves no trace.
    """
    records: dict[str, dict[str, Any]] = {r["pod"]: dict(r) for r in history if "pod" in r}
    order = [r["pod"] for r in history if "pod" in r]
    update = AttemptUpdate(history=[], attempts=attempts, failed_attempts=failed_attempts)

    def number(rec: dict[str, Any]) -> None:
        if "attempt" not in rec:
            update.attempts += 1
            rec["attempt"] = update.attempts

    present: set[str] = set()
    for pod in sorted(pods, key=lambda p: (p.created, p.name)):
        present.add(pod.name)
        rec = records.get(pod.name)
        if rec is None:
            rec = {"pod": pod.name, "phase": "Pending", "startTime": pod.created or now}
            records[pod.name] = rec
            order.append(pod.name)
        if rec["phase"] in ("Succeeded", "Failed", "Stopped"):
            continue  # a finished attempt never changes
        new_phase = attempt_phase(pod)
        if new_phase == rec["phase"]:
            continue
        if new_phase == "Pending":
            continue
        number(rec)
        if new_phase == "Running":
            rec["phase"] = "Running"
            update.started.append(rec)
            continue
        rec.update(phase=new_phase, **pod_ending(pod))
        rec.setdefault("finishTime", now)
        if new_phase == "Failed":
            rec["counted"] = True
            update.failed_attempts += 1
            update.failed.append(rec)
        elif new_phase == "Succeeded":
            update.succeeded = (rec, pod)
    _pods_gone(records, order, present, now)
    finished = [n for n in order if n not in present]
    keep_finished = set(finished[-MAX_FINISHED_HISTORY:])
    update.history = [records[n] for n in order if n in present or n in keep_finished]
    return update


def _pods_gone(records: dict[str, dict[str, Any]], order: list[str], present: set[str], now: str) -> None:
    """Attempts whose pods vanished unfinished: forgotten if they never started, else Stopped."""
    for name in list(order):
        rec = records[name]
        if name in present or rec["phase"] not in ("Pending", "Running"):
            continue
        if rec["phase"] == "Pending" and "attempt" not in rec:
            order.remove(name)  # never started
        else:
            # Gone before we saw it end (deleted, e.g. by suspend or by hand).
            rec.update(phase="Stopped", reason=rec.get("reason") or Reason.POD_DELETED, finishTime=now)


def describe(record: dict[str, Any]) -> str:
    text = record.get("reason") or Reason.ERROR
    if record.get("exitCode") is not None:
        text += f" (exit code {record['exitCode']})"
    if record.get("message"):
        text += f": {record['message']}"
    return text


def attempt_no(upd: AttemptUpdate, rec: dict[str, Any]) -> int:
    return rec.get("attempt") or upd.attempts


def last_failed(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((r for r in reversed(history) if r.get("phase") == "Failed"), None)
