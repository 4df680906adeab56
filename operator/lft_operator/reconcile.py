"""The reconcile loop of one LoRAFineTune: observe, decide (status/, pure), act.

Level-triggered: whatever triggered it (the resource, its Job, one of its pods, the periodic
resync, an operator restart), a reconcile reads the resource fresh from the API server, takes
the Job and pods from the watch caches, creates what is missing (idempotently: deterministic
names, 409 means it exists), and patches only the status fields the operator owns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable
from typing import Any, cast

from lft_api.conditions import Reason
from lft_api.resource import LoRAFineTuneSpec

from . import builders, gang_reconcile, metrics
from .builders import Owner
from .children import (
    Cache,
    EventSink,
    Memory,
    RetryLater,
    RunChildren,
    job_path,
    resource_fingerprint,
    resource_path,
)
from .events import EventPoster
from .kube import ApiError, Kube, NotLeader, core_path
from .ownership import OutputClaim
from .settings import Settings
from .status import TERMINAL_PHASES, Event, Observation, classify_create_error, decide, now_rfc3339
from .validation import validate_resource
from .views import JobView, PodView, WorkloadView, controller_uid
from .workqueue import WorkQueue

logger = logging.getLogger(__name__)

MAX_FORBIDDEN_BACKOFF = 60.0
# Re-exported: what the reconcile of a resource uses from its peers' common ground (children.py).
__all__ = ["Cache", "Reconciler", "RetryLater", "build_reconciler", "job_path", "resource_fingerprint",
           "resource_path"]


def build_reconciler(kube: Kube, settings: Settings, cache: Cache, clock: Callable[[], str] = now_rfc3339) -> Reconciler:
    """The Reconciler with its real work queue and Event poster (the operator's composition root, handlers.py)."""
    reconciler: Reconciler
    queue = WorkQueue(lambda key: reconciler.run(key), concurrency=settings.api_workers)
    reconciler = Reconciler(kube, settings, cache, queue=queue, events=EventPoster(kube, clock), clock=clock)
    return reconciler


class Reconciler:
    """Triggers (watch events, resync) into the work queue; one reconcile per resource at a time. The single-pod
    path is here; a multi-node run goes to gang_reconcile.py. Both act through RunChildren (children.py)."""

    def __init__(self, kube: Kube, settings: Settings, cache: Cache, *, queue: WorkQueue, events: EventSink,
                 clock: Callable[[], str] = now_rfc3339):
        self.kube = kube
        self.settings = settings
        self.cache = cache
        self.clock = clock
        self.queue = queue
        self.events = events
        self.phases = metrics.PhaseTracker()
        self.memory = Memory()
        self.children = RunChildren(kube, settings, cache, queue, events, self.memory, self.phases, clock)
        self.claims = self.children.claims
        self._views: dict[str, JobView | PodView | WorkloadView] = {}  # by uid: the last view of each child
        self._forbidden: dict[tuple[str, str], int] = {}  # Job creations forbidden in a row, by resource
        # Resource body and Job a reconcile just created, for the follow-up reconcile (the watch cache
        # may lag behind; nothing in the body changed by the operator yet).
        self._deferred: dict[tuple[str, str], tuple[dict[str, Any], JobView]] = {}

    @property
    def known(self) -> set[tuple[str, str]]:
        return self.memory.known

    # --- triggers -------------------------------------------------------------------------------

    def trigger(self, namespace: str, name: str) -> None:
        self.memory.known.add((namespace, name))
        # Never reconciled (see on_resource): its Job does not exist yet, so it goes first.
        self.queue.add((namespace, name), urgent=(namespace, name) in self.memory.fresh)

    def on_resource(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        """A watch event of a LoRAFineTune: reconcile unless only trainer-owned fields changed
        (progress patches) or it is the echo of the operator's own status write."""
        fingerprint = resource_fingerprint(body)
        memory = self.memory
        if memory.fingerprints.get((namespace, name)) == fingerprint:
            return
        memory.fingerprints[(namespace, name)] = fingerprint
        if not (body.get("status") or {}).get("observedGeneration"):
            # Never reconciled: nothing in it can be older than what the operator knows, so the
            # first reconcile may use it instead of reading it again (apply -> Job latency).
            memory.fresh[(namespace, name)] = body
        else:
            memory.fresh.pop((namespace, name), None)
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
        self.memory.forget(key)
        self.queue.forget(key)
        for state in (self._forbidden, self._deferred):
            state.pop(key, None)
        self.claims.forget(key)
        self.phases.set(key, None)

    async def resync_forever(self) -> None:
        """Reconcile everything now and then: converges whatever a lost event left behind."""
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            for namespace, name in list(self.memory.known):
                self.queue.add((namespace, name))

    async def run(self, key: Hashable) -> None:
        namespace, name = cast(tuple[str, str], key)  # the queue's keys are (namespace, name): trigger()
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
        body = (self.memory.fresh.pop((namespace, name), None) or deferred_body
                or await self.kube.get(resource_path(namespace, name)))
        if body is None:
            self.forget(namespace, name)
            return
        if body["metadata"].get("deletionTimestamp"):
            return  # the garbage collector removes the children
        owner = Owner.from_body(body)
        if gang_reconcile.requested(body, self.children.trusted(body, owner).status, self.cache.jobs(namespace, name)):
            return await gang_reconcile.reconcile_gang(self.children, body)  # training.nodes > 1 when the run started
        obs = await self._observe(body, created_job)
        if obs is None:
            return  # the Job was just created: the follow-up reconcile decides
        decision = decide(obs)
        await self.children.apply(body, decision)

    async def _observe(self, body: dict[str, Any], created_job: JobView | None) -> Observation | None:
        owner = Owner.from_body(body)
        trust = self.children.trusted(body, owner)
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
                await self.children.ensure_companions(owner, spec, with_service_account=created_job is None)
            except ApiError as e:
                if e.reason != Reason.NAME_TAKEN:
                    raise
                # The Job exists: its trainer refuses a config that is not its run's (ConfigNotThisRun), and
                # the attempts end with that reason; the user reads why here.
                self.events.post_in_background(body, [Event("Warning", Reason.NAME_TAKEN, e.message)])
        if obs.job is not None:
            obs.pods = await self._job_pods(owner, obs.job, status)
        if status.get("phase") not in TERMINAL_PHASES:
            obs.pod_failure = await self.children.pod_failure(owner, obs.job, obs.pods, obs.now)
        return obs

    async def _create_job(self, owner: Owner, body: dict[str, Any], spec: LoRAFineTuneSpec, obs: Observation) -> bool:
        """Create the ServiceAccount and Job unless something stands in the way (then recorded in
        `obs`): True when created. The rest follows in a normal-priority reconcile: in a burst, Job
        creation comes first for every new resource (apply -> Job latency). That reconcile takes the
        path of a Job that no status records yet, as after a crash between the two steps."""
        key = (owner.namespace, owner.name)
        obs.problems = self.children.output_problems(body, spec)
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

    # --- writes ---------------------------------------------------------------------------------

    async def _ensure_children(self, owner: Owner, spec: LoRAFineTuneSpec) -> JobView:
        if spec.pod_template.service_account_name is None:
            # Before the Job: the Job controller's pod is rejected while its ServiceAccount is missing
            # (and then retried only after a 10 s+ backoff). The rest follows in the next reconcile:
            # the kubelet waits for a missing ConfigMap, and the RoleBinding matters only once the
            # trainer runs.
            await self.children.create_or_adopt(builders.service_account(owner))
        body, created = await self.children.create_or_adopt(builders.job(owner, spec, self.settings))  # never another's
        if created:
            metrics.JOBS_CREATED.inc()
            logger.info("created Job %s/%s", owner.namespace, builders.child_name(owner.name))
        return JobView.from_job(body)

    async def close(self) -> None:
        await self.queue.close()
        await self.events.close()
