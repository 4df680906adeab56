"""What the single-pod path (reconcile.py) and the multi-node path (gang_reconcile.py) share, as their common
ground: the run's child objects and the writes of a decision.

- create or adopt a child (deterministic names; a 409 reads what exists, and never adopts another's object),
  the Job's companions (ConfigMap, Role, RoleBinding, ServiceAccount);
- the Job controller's FailedCreate Events while a Job has no pod (Events are not watched: re-checked);
- who holds which output prefix (ownership.py), and the status as the operator trusts it (status/trust.py);
- apply a decision: the Job and Workload patches, the status patch (a JSON patch guarded by the status as read),
  the Events.

Per-resource memory between reconciles lives in `Memory`, which the Reconciler owns and shares with this module.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from lft_api import contract
from lft_api.conditions import Reason
from lft_api.resource import LoRAFineTuneSpec

from . import builders, kueue, metrics
from .builders import Owner
from .kube import ApiError, Kube, collection_path, core_path, group_path, object_path
from .ownership import OutputClaim, OutputClaims
from .settings import Settings
from .status import (
    OWNED_FIELDS,
    Decision,
    PodCreationFailure,
    Problem,
    Trusted,
    newest_failed_create,
    status_json_patch,
    trusted_status,
    wants_pod,
)
from .status.model import Event, seconds_between
from .views import JobView, PodView, name_holder

logger = logging.getLogger(__name__)

POD_RECHECK_SECONDS = 5.0  # while a Job has no pod: look for the Job controller's FailedCreate Events
POD_GRACE_SECONDS = 2.0  # a Job this young has no pod yet, normally: no Event lookup before

Key = tuple[str, str]  # (namespace, name) of a LoRAFineTune


class RetryLater(Exception):
    """A condition that resolves by itself (e.g. an old Job still being garbage-collected)."""


class Cache(Protocol):
    """The watch caches (kopf indexes): the operator's Jobs and pods by resource, output claims by namespace, root."""

    def jobs(self, namespace: str, name: str) -> list[JobView]: ...

    def pods(self, namespace: str, name: str) -> list[PodView]: ...

    def outputs(self, namespace: str, root: str) -> list[OutputClaim]: ...


class Scheduler(Protocol):
    """The work queue (workqueue.WorkQueue): reconciles by key."""

    def add(self, key: Hashable, urgent: bool = False) -> None: ...

    def add_after(self, key: Hashable, delay: float) -> None: ...

    def forget(self, key: Hashable) -> None: ...

    async def close(self) -> None: ...


class EventSink(Protocol):
    """Where Events go (events.EventPoster)."""

    def post_in_background(self, body: dict[str, Any], events: list[Event]) -> None: ...

    async def cancel(self) -> None: ...

    async def close(self) -> None: ...


@dataclass
class Memory:
    """What the operator remembers of each resource between reconciles."""

    known: set[Key] = field(default_factory=set)
    fingerprints: dict[Key, str] = field(default_factory=dict)  # what a reconcile depends on, last seen
    fresh: dict[Key, dict[str, Any]] = field(default_factory=dict)  # new resources, from their watch event
    # The owned status fields as the operator last wrote them, with the resource's uid: what a foreign write of
    # them is reverted to (status/trust.py).
    written: dict[Key, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    refusals: dict[Key, int] = field(default_factory=dict)  # status writes refused in a row
    rechecks: set[Key] = field(default_factory=set)  # resources with a pod re-check pending

    def forget(self, key: Key) -> None:
        self.known.discard(key)
        for state in (self.fingerprints, self.fresh, self.written, self.refusals):
            state.pop(key, None)


def resource_path(namespace: str, name: str, subresource: str | None = None) -> str:
    path = group_path(contract.API_GROUP, contract.API_VERSION, namespace, contract.PLURAL, name)
    return f"{path}/{subresource}" if subresource else path


def job_path(namespace: str, name: str) -> str:
    return group_path("batch", "v1", namespace, "jobs", name)


def resource_fingerprint(body: dict[str, Any]) -> str:
    """What a reconcile depends on: the trainer's checkpoint health (CheckpointsHealthy), not its progress."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    health = status.get("checkpointHealth")
    return json.dumps(
        [
            meta.get("uid"),
            meta.get("generation"),
            meta.get("deletionTimestamp"),
            {k: status.get(k) for k in OWNED_FIELDS},
            status.get("trainerUid"),  # a trainer of another run reporting here: its fields are removed
            [health.get(k) for k in ("healthy", "message", "failedUploads")] if isinstance(health, dict) else None,
        ],
        sort_keys=True,
        default=str,
    )


class RunChildren:
    def __init__(self, kube: Kube, settings: Settings, cache: Cache, queue: Scheduler, events: EventSink,
                 memory: Memory, phases: metrics.PhaseTracker, clock: Callable[[], str]):
        self.kube = kube
        self.settings = settings
        self.cache = cache
        self.queue = queue
        self.events = events
        self.memory = memory
        self.phases = phases
        self.clock = clock
        self.claims = OutputClaims(cache)  # who holds which output prefix
        self.events_allowed = True  # RBAC: listing Events is optional (FailedCreate lookups)

    # --- what a reconcile reads -----------------------------------------------------------------

    def trusted(self, body: dict[str, Any], owner: Owner) -> Trusted:
        """The status as the operator trusts it: its own fields as it last wrote them (status/trust.py)."""
        uid, remembered = self.memory.written.get((owner.namespace, owner.name), ("", None))
        return trusted_status(body, remembered if uid == owner.uid else None)

    def output_problems(self, body: dict[str, Any], spec: LoRAFineTuneSpec) -> list[Problem]:
        conflict = self.claims.check(body, spec.output.overwrite)  # None: the caller creates the Job(s) at once
        return [conflict] if conflict is not None else []

    async def pod_failure(self, owner: Owner, job: JobView | None, pods: list[PodView],
                          now: str) -> PodCreationFailure | None:
        """While `job` has no pod: the Job controller's newest FailedCreate Event, re-checked every few seconds
        (Events are not watched). Multi-node runs: the attempt's Job."""
        if job is None or not wants_pod(job, pods):
            return None
        key = (owner.namespace, owner.name)
        age = seconds_between(job.created, now)
        if age is not None and age < POD_GRACE_SECONDS:
            self.recheck_later(key, POD_GRACE_SECONDS - age + 0.5)
            return None
        self.recheck_later(key, POD_RECHECK_SECONDS)
        if not self.events_allowed:
            return None
        selector = f"involvedObject.uid={job.uid},reason=FailedCreate"
        try:
            events = await self.kube.list_items(core_path(owner.namespace, "events"), fieldSelector=selector)
        except ApiError as e:
            if e.status != 403:
                raise
            logger.warning("not allowed to list Events (%s); pod creation failures go unreported", e.reason)
            self.events_allowed = False
            return None
        return newest_failed_create(events)

    def recheck_later(self, key: Key, delay: float) -> None:
        """One pending re-check per resource, however many reconciles ask for one."""
        if key in self.memory.rechecks:
            return
        self.memory.rechecks.add(key)

        def due() -> None:
            self.memory.rechecks.discard(key)
            if key in self.memory.known:
                self.queue.add(key)

        asyncio.get_running_loop().call_later(delay, due)

    # --- children -------------------------------------------------------------------------------

    async def create_or_adopt(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create, or read what exists: (body, created)."""
        try:
            return await self.kube.create(collection_path(manifest), manifest), True
        except ApiError as e:
            if e.status != 409:
                raise
        existing = await self.kube.get(object_path(manifest))
        if existing is None:
            raise RetryLater(f"{manifest['kind']} {manifest['metadata']['name']} exists and vanished")
        held = name_holder(manifest["kind"], manifest["metadata"]["name"], manifest["metadata"], existing["metadata"])
        if held is not None:
            transient, message = held
            # Never adopt another's object: its ServiceAccount, config or Job is not this run's.
            raise RetryLater(message) if transient else ApiError(409, Reason.NAME_TAKEN, message)
        return existing, False

    async def ensure_companions(self, owner: Owner, spec: LoRAFineTuneSpec, with_service_account: bool) -> None:
        """The Job's ConfigMap, Role and RoleBinding (and ServiceAccount), idempotently."""

        async def role_then_binding() -> None:
            # Creating a RoleBinding resolves its Role (RBAC escalation check): the Role comes first.
            await self.create_or_adopt(builders.trainer_role(owner))
            await self.create_or_adopt(builders.role_binding(owner, spec))

        creations = [self.create_or_adopt(builders.config_map(owner, spec, self.settings)), role_then_binding()]
        if with_service_account and spec.pod_template.service_account_name is None:
            creations.append(self.create_or_adopt(builders.service_account(owner)))
        await asyncio.gather(*creations)

    # --- writes of a decision -------------------------------------------------------------------

    async def apply(self, body: dict[str, Any], decision: Decision) -> None:
        """decision.job_patches go to the single-pod Job (the multi-node path patches its attempt's Job itself)."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        for patch in decision.job_patches:
            await self.kube.merge_patch(job_path(namespace, builders.child_name(name)), patch)
            logger.info("patched Job %s/%s: %s", namespace, builders.child_name(name), json.dumps(patch["spec"]))
        await kueue.patch_workloads(self.kube, namespace, decision.workload_patches)  # Kueue: spec.active
        if decision.patch and not await self._write_status(body, decision):
            return
        self.phases.set((namespace, name), decision.status.get("phase"))
        if decision.events:
            self.events.post_in_background(body, decision.events)

    async def _write_status(self, body: dict[str, Any], decision: Decision) -> bool:
        """Patch the status; False when the write was refused (then a reconcile is queued)."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        ops = status_json_patch(meta["uid"], body.get("status"), decision.patch, meta.get("resourceVersion"))
        memory = self.memory
        try:
            written = await self.kube.json_patch(resource_path(*key, "status"), ops)
        except ApiError as e:
            if e.status == 404:
                return False  # deleted meanwhile
            if e.status not in (409, 422):
                raise
            # A failed test op: changed since read (often a trainer progress patch; the server does
            # not say which test failed) or re-created under the same name. Nothing of the stale
            # decision was written: decide again on a fresh read, at once. Refused again right after
            # a fresh read means an invalid status: log it, look again later.
            memory.fresh.pop(key, None)
            refusals = memory.refusals[key] = memory.refusals.get(key, 0) + 1
            if refusals > 1:
                logger.warning("status patch of %s/%s refused: %s", *key, e.message)
            self.queue.add_after(key, 0.05 if refusals == 1 else 5.0)
            return False
        # The watch event of this write needs no reconcile: this one computed it.
        memory.fingerprints[key] = resource_fingerprint(written)
        written_status = written.get("status") or {}
        memory.written[key] = (meta["uid"], {k: written_status[k] for k in OWNED_FIELDS if k in written_status})
        memory.refusals.pop(key, None)
        metrics.STATUS_PATCHES.inc()
        return True
