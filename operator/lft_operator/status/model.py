"""What the status logic takes in (Observation) and gives back (Decision), and the status patch."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from lft_api.resource import OPERATOR_OWNED_STATUS_FIELDS, LoRAFineTuneSpec, LoRAFineTuneStatus

from ..views import JobView, PodView

# Status fields the operator owns: every field of LoRAFineTuneStatus but the trainer's.
OWNED_FIELDS = OPERATOR_OWNED_STATUS_FIELDS


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def seconds_between(earlier: str | None, later: str | None) -> float | None:
    start, end = parse_time(earlier), parse_time(later)
    return None if start is None or end is None else (end - start).total_seconds()


@dataclass(frozen=True)
class Problem:
    """Why a spec is not accepted, or why the Job cannot be created."""

    reason: str
    message: str


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class PodCreationFailure:
    """The newest FailedCreate Event the Job controller posted on the Job (quota, Pod Security, ...)."""

    message: str
    last_seen: str  # the Event's lastTimestamp


@dataclass
class Observation:
    name: str
    generation: int
    status: dict[str, Any]  # as the operator may trust it (status/trust.py): its fields and the trainer's
    spec: LoRAFineTuneSpec | None
    problems: list[Problem]
    job_name: str
    job: JobView | None
    pods: list[PodView]
    now: str
    job_lost: bool = False  # status says a Job was created, the API server says it is gone
    create_error: Problem | None = None  # the API server refused the Job (JobInvalid, JobForbidden)
    pod_failure: PodCreationFailure | None = None  # looked up only while the Job has no live pod
    pod_creation_timeout: float = 600.0
    uid: str = ""  # metadata.uid
    stored: dict[str, Any] | None = None  # the status as read, when it differs from `status`: the patch reverts it
    stale: tuple[str, ...] = ()  # trainer fields written under another UID: removed
    foreign: dict[str, list[str]] = field(default_factory=dict)  # owned fields another manager wrote: reverted
    jobs: list[JobView] = field(default_factory=list)  # multi-node runs: every Job of the resource
    # Multi-node runs: by Job uid, the FailedCreate Events of the attempt's Job while pods of it are missing.
    node_pod_failures: dict[str, PodCreationFailure] = field(default_factory=dict)
    kueue: bool = False  # the Kueue integration is on (settings.kueue): status/queue.py applies to queued Jobs


@dataclass
class Decision:
    status: dict[str, Any]  # the new operator-owned fields (wire form)
    patch: dict[str, Any]  # merge patch of status: changed owned fields (+ final progress/metrics)
    events: list[Event] = field(default_factory=list)
    job_patches: list[dict[str, Any]] = field(default_factory=list)
    # Multi-node runs (status/gang.py): the attempt whose Indexed Job job_patches go to (else the single-pod
    # Job), and the attempt whose Indexed Job to create.
    patch_attempt: int | None = None
    create_attempt: int | None = None
    # Kueue (status/queue.py): merge patches of the run's Workload (spec.active), by Workload name.
    workload_patches: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def owned_status(raw: dict[str, Any] | None) -> LoRAFineTuneStatus:
    """The operator's part of a status, as the model (the trainer's fields are not parsed). A field
    the model cannot read (written by hand, or by another version) is dropped, and rewritten."""
    data = {k: v for k, v in (raw or {}).items() if k in OWNED_FIELDS}
    try:
        return LoRAFineTuneStatus.model_validate(data)
    except ValidationError as err:
        unreadable = {e["loc"][0] for e in err.errors() if e.get("loc")}
        return LoRAFineTuneStatus.model_validate({k: v for k, v in data.items() if k not in unreadable})


def owned_wire(status: LoRAFineTuneStatus) -> dict[str, Any]:
    """Every owned field in wire form; None for the unset ones (a merge patch removes them)."""
    wire = status.to_wire()
    return {k: wire.get(k) for k in OWNED_FIELDS}


def owned_patch(stored: dict[str, Any] | None, new: LoRAFineTuneStatus) -> dict[str, Any]:
    """The owned fields of `new` that differ from the stored status (None: remove)."""
    stored = stored or {}
    return {k: v for k, v in owned_wire(new).items() if stored.get(k) != v}


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
