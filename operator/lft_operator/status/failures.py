"""Failures outside the trainer: the Job refused, its pod not creatable, checkpoint uploads (pure).

- Job creation refused by the API server: 422 (invalid, e.g. a podTemplate volume named like one
  of the operator's) is final, JobInvalid; 403 (RBAC, a ResourceQuota on count/jobs.batch) is
  retried with backoff, JobForbidden, and clears once the Job exists.
- The Job exists but its pod cannot be created (the Job controller's FailedCreate Events: quota,
  Pod Security admission, a missing ServiceAccount or PriorityClass): Pending, PodCreationFailed,
  with the Event's message; after LFT_POD_CREATION_TIMEOUT_SECONDS without a pod, Failed,
  PodCreationTimeout, and the Job is stopped. A multi-node run (status/gang.py) applies the same rules to
  its attempt's Indexed Job.
- status.checkpointHealth (patched by the trainer) -> the CheckpointsHealthy condition.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from lft_api.conditions import CHECKPOINTS_HEALTHY, SUSPENDED, Reason
from lft_api.contract import CheckpointHealth

from ..views import JobView, PodView
from .attempts import truncate
from .draft import Draft
from .model import PodCreationFailure, Problem, seconds_between


def classify_create_error(status: int, message: str, reason: str = "") -> Problem | None:
    """What a refused create means for the run; None: a transient error (retried, not reported)."""
    if status in (400, 422):
        # 400: a field the server does not know or got twice (writes ask for strict field validation, kube.py):
        # the same spec fails the same way every time, as an invalid one (422) does.
        return Problem(Reason.JOB_INVALID, f"The API server rejected the training Job: {truncate(message)}")
    if status == 403:
        return Problem(Reason.JOB_FORBIDDEN, f"Creating the training Job is forbidden: {truncate(message)}")
    if status == 409 and reason == Reason.NAME_TAKEN:  # RunChildren.create_or_adopt: the name is another object's
        return Problem(Reason.NAME_TAKEN, truncate(message))
    return None


def newest_failed_create(events: list[dict[str, Any]]) -> PodCreationFailure | None:
    """The newest of the Job controller's FailedCreate Events on a Job."""

    def seen(e: dict[str, Any]) -> str:
        return e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp") or ""

    if not events:
        return None
    newest = max(events, key=seen)
    return PodCreationFailure(message=newest.get("message") or "FailedCreate", last_seen=seen(newest))


def wants_pod(job: JobView | None, pods: list[PodView]) -> bool:
    """The Job should have more pods running than it has (one; a multi-node run's Indexed Job, one per node):
    the case where FailedCreate Events matter."""
    if job is None or job.complete or job.failed_reason is not None or job.suspended:
        return False
    return sum(1 for p in pods if not p.terminated and not p.deleted) < job.nodes


def waiting_since(d: Draft, history: list[dict[str, Any]], job: JobView | None) -> str:
    """Since when `job` has wanted a pod: its creation, the last attempt's end, or the resume."""
    times = [job.created if job is not None else ""] + [r.get("finishTime") or "" for r in history]
    suspended = d.conds.get(SUSPENDED)
    if suspended is not None and suspended.status == "False" and suspended.reason == Reason.RESUMED:
        times.append(suspended.last_transition_time)
    if job is not None and job.workload is not None:  # Kueue: queued for hours is no pod-creation failure
        times.append(job.workload.admitted_at)
    return max(times)  # RFC 3339 UTC timestamps, all in one format, compare as strings


def pod_failure(d: Draft, history: list[dict[str, Any]], job: JobView | None = None,
                pods: list[PodView] | None = None, failure: PodCreationFailure | None = None) -> PodCreationFailure | None:
    """The Job controller's current reason for not creating the pod of `job` (default: the observed Job,
    its pods and failure) (older Events are stale)."""
    if job is None:
        job, pods, failure = d.obs.job, d.obs.pods, d.obs.pod_failure
    if failure is None or not wants_pod(job, pods or []):
        return None
    return failure if failure.last_seen >= waiting_since(d, history, job) else None


def pod_creation_timed_out(d: Draft, history: list[dict[str, Any]], job: JobView | None = None,
                           pods: list[PodView] | None = None, failure: PodCreationFailure | None = None) -> str | None:
    """The final message when no pod of `job` (default: the observed Job) could be created for longer than
    the timeout, else None."""
    failure = pod_failure(d, history, job, pods, failure)
    if failure is None:
        return None
    waited = seconds_between(waiting_since(d, history, job or d.obs.job), d.obs.now)
    if waited is None or waited < d.obs.pod_creation_timeout:
        return None
    return (
        f"No trainer pod could be created for {int(waited)} s (limit {int(d.obs.pod_creation_timeout)} s); "
        f"last error: {failure.message}"
    )


def checkpoint_health(d: Draft) -> None:
    """CheckpointsHealthy from status.checkpointHealth; a Warning Event when uploads start failing."""
    raw = d.obs.status.get("checkpointHealth")  # trusted: written under this run's UID
    if not isinstance(raw, dict):
        return
    try:
        health = CheckpointHealth.model_validate(raw)
    except ValidationError:
        return
    if health.healthy:
        newest = f" (newest: step {health.last_uploaded_step})" if health.last_uploaded_step is not None else ""
        d.conds.set(CHECKPOINTS_HEALTHY, True, Reason.CHECKPOINTS_UPLOADING, f"Checkpoint uploads succeed{newest}.")
        return
    message = (
        f"Checkpoint uploads are failing ({health.failed_uploads} in a row): {truncate(health.message) or 'no message'}"
    )
    old = d.conds.get(CHECKPOINTS_HEALTHY)
    if old is None or old.status != "False":
        d.event("Warning", Reason.CHECKPOINT_UPLOAD_FAILING, message)
    d.conds.set(CHECKPOINTS_HEALTHY, False, Reason.CHECKPOINT_UPLOAD_FAILING, message)
