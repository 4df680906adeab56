"""Status logic (pure): from what the operator observes to the status it writes.

`decide(Observation) -> Decision`: the new operator-owned status fields (phase, conditions per the
Kubernetes API conventions, attempts), the Events to post for the transitions, and the patches
the Job needs (suspend, resume, stop, runPolicy). No I/O here: reconcile.py gathers the
observation and applies the decision.

Rules, in order:
1. Succeeded and Failed are final.
2. A trainer exit code 0 (or the Job's Complete condition) -> Succeeded, with the adapter and final
   metrics from the termination message.
3. Exit code INVALID_INPUT -> Failed at once, and the Job is stopped (no retries).
4. The Job's Failed condition (BackoffLimitExceeded, DeadlineExceeded), or more counted failures
   than runPolicy.backoffLimit -> Failed with the last attempt's reason. The operator counts too:
   the Job controller counts only failed pods that still exist, and its verdict comes after its
   own retry backoff (10 s, 20 s, ...); the operator's count survives pod garbage collection.
5. A Job that vanished before it finished -> Failed (JobDeleted).
6. Otherwise Pending / Running / Suspended from the spec and the pods.

Failures count toward backoffLimit as the Job controller counts them: a pod that ended Failed
without being deleted. Pods deleted on purpose (suspend, kubectl delete pod) are "Stopped".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lft_api import contract
from lft_api.conditions import (
    ACCEPTED,
    CONDITION_TYPES,
    FAILED,
    RUNNING,
    SPEC_CHANGE_IGNORED,
    SUCCEEDED,
    SUSPENDED,
    TERMINAL_PHASES,
)
from lft_api.contract import Progress, TerminationMessage
from lft_api.resource import LoRAFineTuneSpec

from .builders import applied_spec, parallelism_patch, run_policy_patch, stop_patch
from .views import JobView, PodView

# Status fields the operator owns (the trainer owns progress, metrics, latestCheckpoint).
OWNED_FIELDS = (
    "phase",
    "message",
    "conditions",
    "observedGeneration",
    "jobName",
    "startTime",
    "completionTime",
    "attempts",
    "failedAttempts",
    "attemptHistory",
    "adapter",
)
MAX_FINISHED_HISTORY = 10  # attempts kept in status once their pods are gone
MAX_MESSAGE = 512

CONDITION_ORDER = CONDITION_TYPES


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Problem:
    """Why a spec is not accepted."""

    reason: str
    message: str


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Observation:
    name: str
    generation: int
    status: dict[str, Any]
    spec: LoRAFineTuneSpec | None
    problems: list[Problem]
    job_name: str
    job: JobView | None
    pods: list[PodView]
    now: str
    job_lost: bool = False  # status says a Job was created, the API server says it is gone


@dataclass
class Decision:
    status: dict[str, Any]  # the new operator-owned fields
    patch: dict[str, Any]  # merge patch of status: changed owned fields (+ final progress/metrics)
    events: list[Event] = field(default_factory=list)
    job_patches: list[dict[str, Any]] = field(default_factory=list)


def status_json_patch(
    uid: str, current: dict[str, Any] | None, patch: dict[str, Any], resource_version: str | None = None
) -> list[dict[str, Any]]:
    """JSON patch writing `patch` (merge-patch semantics: None removes) into status, guarded by test ops.

    The uid test makes the API server refuse the write if the resource was deleted and re-created
    under the same name since it was read (metadata in a merge patch of /status is ignored). The
    resourceVersion test refuses a decision made from a stale read (optimistic concurrency): its
    transition events would be posted twice, and its status could undo a newer one.
    """
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/uid", "value": uid}]
    if resource_version:
        ops.append({"op": "test", "path": "/metadata/resourceVersion", "value": resource_version})
    if not current:
        # "add" replaces an existing (empty) status too.
        ops.append({"op": "add", "path": "/status", "value": {k: v for k, v in patch.items() if v is not None}})
        return ops
    for key, value in patch.items():
        path = "/status/" + key.replace("~", "~0").replace("/", "~1")
        if value is None:
            if key in current:
                ops.append({"op": "remove", "path": path})
        else:
            ops.append({"op": "add", "path": path, "value": value})
    return ops


# --- conditions -------------------------------------------------------------------------------


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """Conditions with `type_` set; lastTransitionTime changes only when the status changes."""
    old = next((c for c in conditions if c.get("type") == type_), None)
    transition = (
        old["lastTransitionTime"] if old and old.get("status") == status and old.get("lastTransitionTime") else now
    )
    new = {"type": type_, "status": status, "reason": reason, "lastTransitionTime": transition}
    if message:
        # Omitted when empty: the 1.20 API server rejects "" in items of this list-map as null.
        new["message"] = message
    new["observedGeneration"] = generation
    out = [c for c in conditions if c.get("type") != type_] + [new]
    order = {t: i for i, t in enumerate(CONDITION_ORDER)}
    return sorted(out, key=lambda c: order.get(c.get("type"), len(order)))


class Conditions:
    """The conditions list being built for one generation at one instant."""

    def __init__(self, items: list[dict[str, Any]], generation: int, now: str):
        self.items = [dict(c) for c in items]
        self.generation = generation
        self.now = now

    def set(self, type_: str, status: bool | str, reason: str, message: str = "") -> None:
        value = status if isinstance(status, str) else ("True" if status else "False")
        self.items = set_condition(self.items, type_, value, reason, message, self.generation, self.now)

    def get(self, type_: str) -> dict[str, Any] | None:
        return get_condition(self.items, type_)

    def true(self, type_: str) -> bool:
        return is_true(self.items, type_)


def get_condition(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def is_true(conditions: list[dict[str, Any]], type_: str) -> bool:
    found = get_condition(conditions, type_)
    return bool(found and found.get("status") == "True")


# --- attempts ---------------------------------------------------------------------------------


def _truncate(text: str | None, limit: int = MAX_MESSAGE) -> str | None:
    if text is None:
        return None
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 12] + " [truncated]"


def attempt_phase(pod: PodView) -> str:
    if pod.terminated:
        if pod.exit_code == 0 or (pod.exit_code is None and pod.phase == "Succeeded"):
            return "Succeeded"
        return "Stopped" if pod.deleted else "Failed"
    if pod.running or pod.phase == "Running":
        return "Running"
    return "Pending"


def _ending(pod: PodView) -> dict[str, Any]:
    """exitCode, reason and message of a finished pod: the trainer's termination message first."""
    parsed = TerminationMessage.decode(pod.term_message)
    if parsed is not None:
        reason, message = parsed.reason, parsed.message
    else:
        reason = pod.term_reason or pod.pod_reason or ("Completed" if pod.exit_code == 0 else "Error")
        message = pod.term_message or pod.pod_message or ""
    out = {"exitCode": pod.exit_code, "reason": reason, "message": _truncate(message), "finishTime": pod.finished_at}
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

    present = set()
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
        rec.update(phase=new_phase, **_ending(pod))
        rec.setdefault("finishTime", now)
        if new_phase == "Failed":
            rec["counted"] = True
            update.failed_attempts += 1
            update.failed.append(rec)
        elif new_phase == "Succeeded":
            update.succeeded = (rec, pod)
    for name in list(order):
        rec = records[name]
        if name in present or rec["phase"] not in ("Pending", "Running"):
            continue
        if rec["phase"] == "Pending" and "attempt" not in rec:
            order.remove(name)  # never started
        else:
            # Gone before we saw it end (deleted, e.g. by suspend or by hand).
            rec.update(phase="Stopped", reason=rec.get("reason") or "PodDeleted", finishTime=now)
    finished = [n for n in order if n not in present]
    keep_finished = set(finished[-MAX_FINISHED_HISTORY:])
    update.history = [records[n] for n in order if n in present or n in keep_finished]
    return update


def _describe(record: dict[str, Any]) -> str:
    text = record.get("reason") or "Error"
    if record.get("exitCode") is not None:
        text += f" (exit code {record['exitCode']})"
    if record.get("message"):
        text += f": {record['message']}"
    return text


# --- spec changes -----------------------------------------------------------------------------


def changed_paths(old: Any, new: Any, prefix: str = "spec") -> list[str]:
    """Field paths that differ between two JSON values (dicts are walked, lists compared whole)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += changed_paths(old.get(key), new.get(key), f"{prefix}.{key}")
        return out
    return [] if old == new else [prefix]


def ignored_changes(spec: LoRAFineTuneSpec | None, job: JobView | None) -> list[str]:
    if spec is None or job is None or not job.applied_spec:
        return []
    try:
        applied = json.loads(job.applied_spec)
    except ValueError:
        return []
    return changed_paths(applied, applied_spec(spec))


# --- the decision -----------------------------------------------------------------------------


def _owned(status: dict[str, Any]) -> dict[str, Any]:
    return {k: status.get(k) for k in OWNED_FIELDS}


class _Draft:
    """The status being decided, with the events and Job patches that go with it."""

    def __init__(self, obs: Observation):
        self.obs = obs
        self.old = obs.status or {}
        self.new: dict[str, Any] = _owned(self.old)
        self.new["observedGeneration"] = obs.generation
        self.conds = Conditions(self.old.get("conditions") or [], obs.generation, obs.now)
        self.events: list[Event] = []
        self.job_patches: list[dict[str, Any]] = []
        self.extra_patch: dict[str, Any] = {}  # trainer-owned fields, only on success

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def final(self, phase: str, reason: str, message: str) -> Decision:
        succeeded = phase == SUCCEEDED
        self.conds.set(SUCCEEDED, succeeded, reason if succeeded else FAILED, message if succeeded else "")
        self.conds.set(FAILED, not succeeded, SUCCEEDED if succeeded else reason, "" if succeeded else message)
        self.conds.set(RUNNING, False, phase)
        if self.conds.true(SUSPENDED):
            self.conds.set(SUSPENDED, False, phase)
        self.new.update(phase=phase, message=message)
        job = self.obs.job
        self.new["completionTime"] = (job.completion_time if job is not None else None) or self.obs.now
        self.event("Normal" if succeeded else "Warning", phase, message)
        return self.done()

    def done(self) -> Decision:
        self.new["conditions"] = self.conds.items
        owned_old = _owned(self.old)
        patch = {k: v for k, v in self.new.items() if owned_old.get(k) != v}
        patch.update(self.extra_patch)
        return Decision(status=self.new, patch=patch, events=self.events, job_patches=self.job_patches)


def decide(obs: Observation) -> Decision:
    d = _Draft(obs)
    job = obs.job

    # Attempts are tracked in every phase (pods may still end after the run is final).
    upd = update_attempts(
        d.old.get("attemptHistory") or [],
        d.old.get("attempts") or 0,
        d.old.get("failedAttempts") or 0,
        obs.pods,
        obs.now,
    )
    d.new.update(attemptHistory=upd.history, attempts=upd.attempts, failedAttempts=upd.failed_attempts)
    if upd.history and not d.new.get("startTime"):
        d.new["startTime"] = upd.history[0].get("startTime") or obs.now
    if job is not None:
        d.new["jobName"] = job.name

    _spec_changes(d)

    if d.old.get("phase") in TERMINAL_PHASES:
        return d.done()

    # Not accepted yet: nothing exists.
    if job is None and not obs.job_lost:
        if obs.problems:
            reason = obs.problems[0].reason
            message = "; ".join(p.message for p in obs.problems)
            old = d.conds.get(ACCEPTED)
            if not (old and old.get("status") == "False" and old.get("message") == message):
                d.event("Warning", reason, message)
            d.conds.set(ACCEPTED, False, reason, message)
            d.conds.set(RUNNING, False, "NotAccepted")
            d.new.update(phase="Pending", message=f"Not accepted: {message}")
        else:
            d.new.update(phase="Pending", message="Creating the training Job.")
        return d.done()

    if not d.conds.true(ACCEPTED):
        d.event("Normal", ACCEPTED, f"Spec accepted; training Job {obs.job_name}.")
    if job is not None and not d.old.get("jobName"):
        # From the status, not from "created just now": a reconcile that created the Job and failed
        # before writing the status is retried, and the retry finds the Job already there.
        d.event("Normal", "JobCreated", f"Created Job {job.name}.")
    d.conds.set(ACCEPTED, True, ACCEPTED, f"Training Job {obs.job_name} created.")
    for rec in upd.started:
        d.event("Normal", "Started", f"Attempt {_attempt_no(upd, rec)} started (pod {rec['pod']}).")

    final = _final_state(d, upd)
    if final is not None:
        return final
    assert job is not None  # _final_state handles a missing Job
    _in_progress(d, upd, job)
    return d.done()


def _spec_changes(d: _Draft) -> None:
    """SpecChangeIgnored: the spec differs from what the Job was built from."""
    ignored = ignored_changes(d.obs.spec, d.obs.job)
    if ignored:
        message = (
            f"{', '.join(ignored)} changed after Job {d.obs.job_name} was created and will not be applied "
            "(a Job's pod template is immutable). To train with the new settings, create a new LoRAFineTune "
            "with another name and output.uri, or delete this one and apply it again (it then resumes from "
            "checkpoints under output.uri)."
        )
        old = d.conds.get(SPEC_CHANGE_IGNORED)
        if not (old and old.get("status") == "True" and old.get("message") == message):
            d.event("Warning", SPEC_CHANGE_IGNORED, message)
        d.conds.set(SPEC_CHANGE_IGNORED, True, "SpecChangedAfterStart", message)
    elif d.conds.get(SPEC_CHANGE_IGNORED) is not None:
        d.conds.set(SPEC_CHANGE_IGNORED, False, "SpecMatchesJob", "The spec matches the running Job.")


def _final_state(d: _Draft, upd: AttemptUpdate) -> Decision | None:
    obs, spec, job = d.obs, d.obs.spec, d.obs.job
    backoff_limit = spec.run_policy.backoff_limit if spec is not None else 0
    last_failure = upd.failed[-1] if upd.failed else _last_failed(upd.history)

    if upd.succeeded is not None or (job is not None and job.complete):
        pod = upd.succeeded[1] if upd.succeeded is not None else None
        result = TerminationMessage.decode(pod.term_message) if pod is not None else None
        text = "Training completed."
        if result is not None and result.adapter is not None:
            d.new["adapter"] = result.adapter.to_wire()
            text = f"Training completed; adapter at {result.adapter.uri}."
        if result is not None:
            # The trainer has exited: its final numbers may go in without racing its own patches.
            if result.metrics is not None:
                d.extra_patch["metrics"] = result.metrics.to_wire()
            if result.step is not None and result.total_steps:
                d.extra_patch["progress"] = Progress.build(result.step, result.total_steps, eta_seconds=0).to_wire()
        elif pod is None:
            text = "Training completed (the Job finished; its pod, with the adapter URI, was not seen)."
        return d.final(SUCCEEDED, "Completed", text)

    invalid = next((r for r in upd.history if outcome(r) == "invalid_input"), None)
    if invalid is not None:
        d.job_patches.append(stop_patch())
        return d.final(
            FAILED, invalid.get("reason") or "InvalidInput", f"Invalid input, not retried: {_describe(invalid)}"
        )

    if job is not None and job.failed_reason is not None:
        reason = job.failed_reason
        text = f"Job failed ({reason}: {job.failed_message or 'no message'})"
        if last_failure is not None:
            reason = last_failure.get("reason") or reason
            text += f"; last attempt: {_describe(last_failure)}"
        return d.final(FAILED, reason, text)

    if upd.failed_attempts > backoff_limit and last_failure is not None:
        d.job_patches.append(stop_patch())
        text = (
            f"{upd.failed_attempts} failed attempts (runPolicy.backoffLimit {backoff_limit}); "
            f"last: {_describe(last_failure)}"
        )
        return d.final(FAILED, last_failure.get("reason") or "BackoffLimitExceeded", text)

    if obs.job_lost or job is None:
        text = (
            f"Job {obs.job_name} was deleted before it finished. Delete and re-apply this LoRAFineTune "
            "to resume from the newest checkpoint."
        )
        return d.final(FAILED, "JobDeleted", text)
    return None


def _in_progress(d: _Draft, upd: AttemptUpdate, job: JobView) -> None:
    spec = d.obs.spec
    backoff_limit = spec.run_policy.backoff_limit if spec is not None else 0
    last_failure = upd.failed[-1] if upd.failed else _last_failed(upd.history)
    for rec in upd.failed:
        d.event(
            "Warning",
            "Retrying",
            f"Attempt {_attempt_no(upd, rec)} failed: {_describe(rec)}; retrying "
            f"({upd.failed_attempts}/{backoff_limit} failures), resuming from the newest checkpoint.",
        )
    if spec is not None:
        policy = run_policy_patch(spec, job.run_policy)
        if policy is not None:
            d.job_patches.append(policy)
    active = [r for r in upd.history if r["phase"] in ("Pending", "Running")]
    running = [r for r in active if r["phase"] == "Running"]
    was_suspended = d.conds.true(SUSPENDED)

    if spec is not None and spec.suspend:
        if job.parallelism != 0:
            d.job_patches.append(parallelism_patch(0))
        if not was_suspended:
            d.event("Normal", "Suspended", "Suspend requested: the trainer saves a checkpoint and stops.")
        if active:
            d.conds.set(SUSPENDED, True, "Suspending", "Waiting for the trainer to save a checkpoint and exit.")
            phase, message = ("Running" if running else "Pending"), "Suspending: the trainer saves a checkpoint."
        else:
            d.conds.set(SUSPENDED, True, "Suspended", "No trainer pod runs; set spec.suspend to false to resume.")
            phase, message = "Suspended", "Suspended; set spec.suspend to false to resume from the newest checkpoint."
        d.conds.set(RUNNING, bool(running), "Suspending" if running else "Suspended")
        d.new.update(phase=phase, message=message)
    else:
        if job.parallelism != 1:
            d.job_patches.append(parallelism_patch(1))
        if was_suspended:
            d.event("Normal", "Resumed", "Resumed: a new attempt resumes from the newest checkpoint.")
            d.conds.set(SUSPENDED, False, "Resumed")
        elif d.conds.get(SUSPENDED) is None:
            d.conds.set(SUSPENDED, False, "NotSuspended")
        if running:
            rec = running[-1]
            message = f"Attempt {_attempt_no(upd, rec)} running (pod {rec['pod']})."
            d.conds.set(RUNNING, True, "TrainerRunning", message)
            d.new.update(phase="Running", message=message)
        else:
            reason, message = _pending_reason(upd, d.obs.pods, last_failure, backoff_limit)
            d.conds.set(RUNNING, False, reason, message)
            d.new.update(phase="Pending", message=message)
    d.conds.set(SUCCEEDED, False, "InProgress")
    d.conds.set(FAILED, False, "InProgress")


def _attempt_no(upd: AttemptUpdate, rec: dict[str, Any]) -> int:
    return rec.get("attempt") or upd.attempts


def _last_failed(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((r for r in reversed(history) if r.get("phase") == "Failed"), None)


def _pending_reason(
    upd: AttemptUpdate, pods: list[PodView], last_failure: dict[str, Any] | None, backoff_limit: int
) -> tuple[str, str]:
    waiting = next((p for p in pods if p.waiting_reason and not p.terminated), None)
    if waiting is not None:
        detail = f": {_truncate(waiting.waiting_message, 200)}" if waiting.waiting_message else ""
        return (
            waiting.waiting_reason or "PodPending",
            f"Trainer pod {waiting.name} waiting ({waiting.waiting_reason}){detail}",
        )
    unschedulable = next((p for p in pods if p.unschedulable and not p.terminated), None)
    if unschedulable is not None:
        return (
            "Unschedulable",
            f"Trainer pod {unschedulable.name} cannot be scheduled: {_truncate(unschedulable.unschedulable, 300)}",
        )
    if upd.history and upd.history[-1].get("phase") == "Failed" and last_failure is not None:
        return "Retrying", (
            f"Attempt {_attempt_no(upd, last_failure)} failed ({_describe(last_failure)}); waiting for the Job "
            "controller to retry "
            f"({upd.failed_attempts}/{backoff_limit} failures)."
        )
    if upd.history and upd.history[-1].get("phase") == "Pending":
        return "PodPending", f"Trainer pod {upd.history[-1]['pod']} is pending (scheduling, image pull)."
    return "JobCreated", "Waiting for the Job controller to create the trainer pod."
