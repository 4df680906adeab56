"""The reconcile loop of one LoRAFineTune: observe, decide (status/, pure), act.

Level-triggered: whatever triggered it (the resource, its Job, one of its pods, the periodic
resync, an operator restart), a reconcile reads the resource fresh from the API server, takes
the Job and pods from the watch caches, creates what is missing (idempotently: deterministic
names, 409 means it exists), and patches only the status fields the operator owns.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Hashable
from typing import Any, Protocol

from lft_api import contract
from lft_api.conditions import Reason

from . import builders, gang_reconcile, kueue, metrics
from .builders import Owner
from .events import EventPoster
from .kube import ApiError, Kube, NotLeader, collection_path, core_path, group_path, object_path
from .ownership import OutputClaim, OutputClaims
from .settings import Settings
from .status import (
    OWNED_FIELDS,
    TERMINAL_PHASES,
    Decision,
    Observation,
    PodCreationFailure,
    Problem,
    classify_create_error,
    decide,
    newest_failed_create,
    now_rfc3339,
    status_json_patch,
    trusted_status,
    wants_pod,
)
from .status.model import Event, seconds_between
from .validation import validate_resource
from .views import JobView, PodView, WorkloadView, controller_uid, name_holder
from .workqueue import WorkQueue

logger = logging.getLogger(__name__)

POD_RECHECK_SECONDS = 5.0  # while a Job has no pod: look for the Job controller's FailedCreate Events
POD_GRACE_SECONDS = 2.0  # a Job this young has no pod yet, normally: no Event lookup before
MAX_FORBIDDEN_BACKOFF = 60.0


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


class Cache(Protocol):
    """The watch caches (kopf indexes): the operator's Jobs and pods by resource, output claims by namespace, root."""

    def jobs(self, namespace: str, name: str) -> list[JobView]: ...

    def pods(self, namespace: str, name: str) -> list[PodView]: ...

    def outputs(self, namespace: str, root: str) -> list[OutputClaim]: ...


class RetryLater(Exception):
    """A condition that resolves by itself (e.g. an old Job still being garbage-collected)."""


def resource_path(namespace: str, name: str, subresource: str | None = None) -> str:
    path = group_path(contract.API_GROUP, contract.API_VERSION, namespace, contract.PLURAL, name)
    return f"{path}/{subresource}" if subresource else path


def job_path(namespace: str, name: str) -> str:
    return group_path("batch", "v1", namespace, "jobs", name)


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        settings: Settings,
        cache: Cache,
        clock: Callable[[], str] = now_rfc3339,
    ):
        self.kube = kube
        self.settings = settings
        self.cache = cache
        self.clock = clock
        self.phases = metrics.PhaseTracker()
        self.queue = WorkQueue(self._run, concurrency=settings.api_workers)
        self.events = EventPoster(kube, clock)
        self.known: set[tuple[str, str]] = set()
        self._fingerprints: dict[tuple[str, str], str] = {}
        self._fresh: dict[tuple[str, str], dict[str, Any]] = {}  # new resources, from their watch event
        self._views: dict[str, JobView | PodView | WorkloadView] = {}  # by uid: the last view of each child
        self._allowed = {"events": True}  # RBAC for the optional checks
        self._refusals: dict[tuple[str, str], int] = {}  # status writes refused in a row, by resource
        self._forbidden: dict[tuple[str, str], int] = {}  # Job creations forbidden in a row, by resource
        # Resource body and Job a reconcile just created, for the follow-up reconcile (the watch cache
        # may lag behind; nothing in the body changed by the operator yet).
        self._deferred: dict[tuple[str, str], tuple[dict[str, Any], JobView]] = {}
        self._rechecks: set[tuple[str, str]] = set()  # resources with a pod re-check pending
        # The owned status fields as the operator last wrote them, by resource (with its uid): what a
        # foreign write of them is reverted to (status/trust.py).
        self._written: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        self.claims = OutputClaims(cache)  # who holds which output prefix

    # --- triggers -------------------------------------------------------------------------------

    def trigger(self, namespace: str, name: str) -> None:
        self.known.add((namespace, name))
        # Never reconciled (see on_resource): its Job does not exist yet, so it goes first.
        self.queue.add((namespace, name), urgent=(namespace, name) in self._fresh)

    def on_resource(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        """A watch event of a LoRAFineTune: reconcile unless only trainer-owned fields changed
        (progress patches) or it is the echo of the operator's own status write."""
        fingerprint = resource_fingerprint(body)
        if self._fingerprints.get((namespace, name)) == fingerprint:
            return
        self._fingerprints[(namespace, name)] = fingerprint
        if not (body.get("status") or {}).get("observedGeneration"):
            # Never reconciled: nothing in it can be older than what the operator knows, so the
            # first reconcile may use it instead of reading it again (apply -> Job latency).
            self._fresh[(namespace, name)] = body
        else:
            self._fresh.pop((namespace, name), None)
        self.trigger(namespace, name)

    def on_output_released(self, claim: OutputClaim) -> None:
        """A resource finished, was deleted or was refused: the others of its namespace waiting for a prefix look again."""
        for other in self.claims.waiting_on(claim):
            self.trigger(other.namespace, other.name)

    def on_child(self, namespace: str, name: str, uid: str, view: JobView | PodView | WorkloadView | None) -> None:
        """A watch event of a Job or pod: reconcile when what the status logic reads changed."""
        if view is None:
            self._views.pop(uid, None)
        elif self._views.get(uid) == view:
            return
        else:
            self._views[uid] = view
        self.trigger(namespace, name)

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self.known.discard(key)
        self.queue.forget(key)
        for state in (self._fingerprints, self._fresh, self._refusals, self._forbidden, self._deferred, self._written):
            state.pop(key, None)
        self.claims.forget(key)
        self.phases.set(key, None)

    async def resync_forever(self) -> None:
        """Reconcile everything now and then: converges whatever a lost event left behind."""
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            for namespace, name in list(self.known):
                self.queue.add((namespace, name))

    async def _run(self, key: Hashable) -> None:
        namespace, name = key  # type: ignore[misc]
        with metrics.RECONCILE_SECONDS.time():
            try:
                await self.reconcile(namespace, name)
            except NotLeader:
                return  # leadership lost mid-reconcile (leader.py): no retry, the next leader resyncs
            except Exception:
                metrics.RECONCILE_ERRORS.inc()
                raise

    # --- one reconcile --------------------------------------------------------------------------

    async def reconcile(self, namespace: str, name: str) -> None:
        deferred_body, created_job = self._deferred.pop((namespace, name), (None, None))
        body = (self._fresh.pop((namespace, name), None) or deferred_body
                or await self.kube.get(resource_path(namespace, name)))
        if body is None:
            self.forget(namespace, name)
            return
        if body["metadata"].get("deletionTimestamp"):
            return  # the garbage collector removes the children
        owner = Owner.from_body(body)
        if gang_reconcile.requested(body, self.trusted(body, owner).status, self.cache.jobs(namespace, name)):
            return await gang_reconcile.reconcile_gang(self, body)  # training.nodes > 1 when the run started
        obs = await self._observe(body, created_job)
        if obs is None:
            return  # the Job was just created: the follow-up reconcile decides
        decision = decide(obs)
        await self._apply(body, decision)

    def trusted(self, body: dict[str, Any], owner: Owner) -> Any:
        """The status as the operator trusts it: its own fields as it last wrote them (status/trust.py)."""
        uid, remembered = self._written.get((owner.namespace, owner.name), ("", None))
        return trusted_status(body, remembered if uid == owner.uid else None)

    async def _observe(self, body: dict[str, Any], created_job: JobView | None) -> Observation | None:
        owner = Owner.from_body(body)
        trust = self.trusted(body, owner)
        status = trust.status
        spec, problems = validate_resource(body, status, self.settings)
        job = self._cached_job(owner) or (created_job if created_job and created_job.owner_uid == owner.uid else None)
        obs = Observation(
            name=owner.name,
            generation=body["metadata"].get("generation", 1),
            status=status,
            spec=spec,
            problems=problems,
            job_name=builders.child_name(owner.name),
            job=job,
            pods=[],
            now=self.clock(),
            pod_creation_timeout=self.settings.pod_creation_timeout_seconds,
            uid=owner.uid, kueue=self.settings.kueue,  # the Job's Workload: from the cache (handlers.IndexCache)
            stored=body.get("status") or {},
            stale=trust.stale,
            foreign=trust.foreign,
        )
        if job is None and status.get("phase") not in TERMINAL_PHASES:
            if status.get("jobName"):
                # Created before; the cache may just lag behind: ask the API server.
                obs.job = await self._read_job(owner)
                obs.job_lost = obs.job is None
            elif spec is not None and not problems and await self._create_job(owner, body, spec, obs):
                return None
        elif job is not None and not status.get("jobName") and spec is not None:
            # A Job that no status records yet: just created (above), or an earlier reconcile created
            # it and stopped (crash, API error) before writing the status and the Job's companions.
            try:
                await self._ensure_companions(owner, spec, with_service_account=created_job is None)
            except ApiError as e:
                if e.reason != Reason.NAME_TAKEN:
                    raise
                # The Job exists: its trainer refuses a config that is not its run's (ConfigNotThisRun), and
                # the attempts end with that reason; the user reads why here.
                self.events.post_in_background(body, [Event("Warning", Reason.NAME_TAKEN, e.message)])
        if obs.job is not None:
            obs.pods = await self._job_pods(owner, obs.job, status)
        if status.get("phase") not in TERMINAL_PHASES:
            obs.pod_failure = await self._pod_failure(owner, obs.job, obs.pods, obs.now)
        return obs

    async def _create_job(self, owner: Owner, body: dict[str, Any], spec: Any, obs: Observation) -> bool:
        """Create the ServiceAccount and Job unless something stands in the way (then recorded in
        `obs`): True when created. The rest follows in a normal-priority reconcile: in a burst, Job
        creation comes first for every new resource (apply -> Job latency). That reconcile takes the
        path of a Job that no status records yet, as after a crash between the two steps."""
        key = (owner.namespace, owner.name)
        obs.problems = self._output_problems(body, spec)
        if obs.problems:
            return False
        try:
            job = await self._ensure_children(owner, spec)
        except ApiError as e:
            self.claims.forget(key)  # no Job: its claim waits its turn again (by order)
            obs.create_error = classify_create_error(e.status, e.message, e.reason)
            if obs.create_error is None:
                raise
            if obs.create_error.reason in (Reason.JOB_FORBIDDEN, Reason.NAME_TAKEN):
                # Quota or RBAC may change any time: retried with backoff, reported meanwhile.
                self._forbidden[key] = self._forbidden.get(key, 0) + 1
                self.queue.add_after(key, min(2.0 ** self._forbidden[key], MAX_FORBIDDEN_BACKOFF))
            logger.warning("creating the Job of %s/%s refused: %s", owner.namespace, owner.name, e)
            return False
        self._forbidden.pop(key, None)
        self._deferred[key] = (body, job)
        self.queue.add(key)
        return True

    # --- writes of a decision -------------------------------------------------------------------

    async def _apply(self, body: dict[str, Any], decision: Decision) -> None:
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
            self._fresh.pop(key, None)
            refusals = self._refusals[key] = self._refusals.get(key, 0) + 1
            if refusals > 1:
                logger.warning("status patch of %s/%s refused: %s", *key, e.message)
            self.queue.add_after(key, 0.05 if refusals == 1 else 5.0)
            return False
        # The watch event of this write needs no reconcile: this one computed it.
        self._fingerprints[key] = resource_fingerprint(written)
        written_status = written.get("status") or {}
        self._written[key] = (meta["uid"], {k: written_status[k] for k in OWNED_FIELDS if k in written_status})
        self._refusals.pop(key, None)
        metrics.STATUS_PATCHES.inc()
        return True

    # --- reads ----------------------------------------------------------------------------------

    def _cached_job(self, owner: Owner) -> JobView | None:
        for job in self.cache.jobs(owner.namespace, owner.name):
            if job.owner_uid == owner.uid:
                return job
        return None

    async def _read_job(self, owner: Owner) -> JobView | None:
        body = await self.kube.get(job_path(owner.namespace, builders.child_name(owner.name)))
        if body is None:
            return None
        if controller_uid(body["metadata"]) != owner.uid:
            raise RetryLater(f"Job {builders.child_name(owner.name)} belongs to an earlier namesake, being deleted")
        return JobView.from_job(body)

    def _output_problems(self, body: dict[str, Any], spec: Any) -> list[Problem]:
        conflict = self.claims.check(body, spec.output.overwrite)  # None: the caller creates the Job(s) at once
        return [conflict] if conflict is not None else []

    async def _job_pods(self, owner: Owner, job: JobView, status: dict[str, Any]) -> list[PodView]:
        pods = [p for p in self.cache.pods(owner.namespace, owner.name) if p.job_uid == job.uid]
        if not job.complete or status.get("phase") in TERMINAL_PHASES or any(p.exit_code == 0 for p in pods):
            return pods
        # Jobs and pods come through separate watches: after a reconnect the Job's Complete condition can
        # arrive before its pod's end, whose termination message holds the adapter. Succeeded is final,
        # so read the pods instead of deciding without the result.
        found = await self.kube.list_items(core_path(owner.namespace, "pods"),
                                           labelSelector=f"{builders.NAME_LABEL}={owner.name}")
        return [p for p in map(PodView.from_pod, found) if p.job_uid == job.uid] or pods

    async def _pod_failure(self, owner: Owner, job: JobView | None, pods: list[PodView],
                           now: str) -> PodCreationFailure | None:
        """While `job` has no pod: the Job controller's newest FailedCreate Event, re-checked
        every few seconds (Events are not watched). Multi-node runs: the attempt's Job (gang_reconcile.py)."""
        if job is None or not wants_pod(job, pods):
            return None
        key = (owner.namespace, owner.name)
        age = seconds_between(job.created, now)
        if age is not None and age < POD_GRACE_SECONDS:
            self._recheck_later(key, POD_GRACE_SECONDS - age + 0.5)
            return None
        self._recheck_later(key, POD_RECHECK_SECONDS)
        if not self._allowed["events"]:
            return None
        selector = f"involvedObject.uid={job.uid},reason=FailedCreate"
        try:
            events = await self.kube.list_items(core_path(owner.namespace, "events"), fieldSelector=selector)
        except ApiError as e:
            if e.status != 403:
                raise
            logger.warning("not allowed to list Events (%s); pod creation failures go unreported", e.reason)
            self._allowed["events"] = False
            return None
        return newest_failed_create(events)

    def _recheck_later(self, key: tuple[str, str], delay: float) -> None:
        """One pending re-check per resource, however many reconciles ask for one."""
        if key in self._rechecks:
            return
        self._rechecks.add(key)

        def due() -> None:
            self._rechecks.discard(key)
            if key in self.known:
                self.queue.add(key)

        asyncio.get_running_loop().call_later(delay, due)

    # --- writes ---------------------------------------------------------------------------------

    async def _create(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
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

    async def _ensure_companions(self, owner: Owner, spec: Any, with_service_account: bool) -> None:
        """The Job's ConfigMap, Role and RoleBinding (and ServiceAccount), idempotently."""

        async def role_then_binding() -> None:
            # Creating a RoleBinding resolves its Role (RBAC escalation check): the Role comes first.
            await self._create(builders.trainer_role(owner))
            await self._create(builders.role_binding(owner, spec))

        creations = [self._create(builders.config_map(owner, spec, self.settings)), role_then_binding()]
        if with_service_account and spec.pod_template.service_account_name is None:
            creations.append(self._create(builders.service_account(owner)))
        await asyncio.gather(*creations)

    async def _ensure_children(self, owner: Owner, spec: Any) -> JobView:
        if spec.pod_template.service_account_name is None:
            # Before the Job: the Job controller's pod is rejected while its ServiceAccount is missing
            # (and then retried only after a 10 s+ backoff). The rest follows in the next reconcile:
            # the kubelet waits for a missing ConfigMap, and the RoleBinding matters only once the
            # trainer runs.
            await self._create(builders.service_account(owner))
        body, created = await self._create(builders.job(owner, spec, self.settings))  # never another's (_create)
        if created:
            metrics.JOBS_CREATED.inc()
            logger.info("created Job %s/%s", owner.namespace, builders.child_name(owner.name))
        return JobView.from_job(body)

    async def close(self) -> None:
        await self.queue.close()
        await self.events.close()
