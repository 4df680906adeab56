"""The reconcile loop of one LoRAFineTune: observe, decide (status.py, pure), act.

Level-triggered: whatever triggered it (the resource, its Job, one of its pods, the periodic
resync, an operator restart), a reconcile reads the resource fresh from the API server, takes
the Job and pods from the watch caches, creates what is missing (idempotently: deterministic
names, 409 means it exists), and patches only the status fields the operator owns.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Hashable
from typing import Any, Protocol

from lft_api import contract

from . import builders, metrics
from .builders import Owner
from .kube import PARTIAL_METADATA, ApiError, Kube, collection_path, core_path, group_path, object_path
from .settings import Settings
from .status import (
    OWNED_FIELDS,
    TERMINAL_PHASES,
    Event,
    Observation,
    Problem,
    decide,
    now_rfc3339,
    status_json_patch,
)
from .validation import validate
from .views import JobView, PodView, controller_uid
from .workqueue import WorkQueue

logger = logging.getLogger(__name__)

COMPONENT = builders.MANAGED_BY
MAX_EVENT_MESSAGE = 1024
SECRET_RECHECK_SECONDS = 10.0
EVENT_CONCURRENCY = 2  # Events are posted in the background, a few at a time: Jobs first


def resource_fingerprint(body: dict[str, Any]) -> str:
    """What a reconcile depends on: the trainer's progress patches leave it unchanged."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    return json.dumps(
        [
            meta.get("uid"),
            meta.get("generation"),
            meta.get("deletionTimestamp"),
            {k: status.get(k) for k in OWNED_FIELDS},
        ],
        sort_keys=True,
        default=str,
    )


class Cache(Protocol):
    """The watch caches (kopf indexes) of the operator's Jobs and pods, by resource."""

    def jobs(self, namespace: str, name: str) -> list[JobView]: ...

    def pods(self, namespace: str, name: str) -> list[PodView]: ...


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
        self.known: set[tuple[str, str]] = set()
        self._fingerprints: dict[tuple[str, str], str] = {}
        self._fresh: dict[tuple[str, str], dict[str, Any]] = {}  # new resources, from their watch event
        self._views: dict[str, JobView | PodView] = {}  # by uid: the last view of each Job and pod
        self._events: set[asyncio.Task[None]] = set()
        self._event_slots = asyncio.Semaphore(EVENT_CONCURRENCY)
        self._secret_check_allowed = True
        self._refusals: dict[tuple[str, str], int] = {}  # status writes refused in a row, by resource
        # Resource body and Job a reconcile just created, for the follow-up reconcile (the watch cache
        # may lag behind; nothing in the body changed by the operator yet).
        self._deferred: dict[tuple[str, str], tuple[dict[str, Any], JobView]] = {}
        self._instance = os.environ.get("HOSTNAME", "lft-operator")

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

    def on_child(self, namespace: str, name: str, uid: str, view: JobView | PodView | None) -> None:
        """A watch event of a Job or pod: reconcile when what the status logic reads changed."""
        if view is None:
            self._views.pop(uid, None)
        elif self._views.get(uid) == view:
            return
        else:
            self._views[uid] = view
        self.trigger(namespace, name)

    def forget(self, namespace: str, name: str) -> None:
        self.known.discard((namespace, name))
        self.queue.forget((namespace, name))
        self._fingerprints.pop((namespace, name), None)
        self._fresh.pop((namespace, name), None)
        self._refusals.pop((namespace, name), None)
        self._deferred.pop((namespace, name), None)
        self.phases.set((namespace, name), None)

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
        status = body.get("status") or {}
        spec, problems = validate(body.get("spec") or {}, name)
        job = self._cached_job(owner) or (created_job if created_job and created_job.owner_uid == owner.uid else None)
        job_lost = False

        if job is None and status.get("phase") not in TERMINAL_PHASES:
            if status.get("jobName"):
                # Created before; the cache may just lag behind: ask the API server.
                job = await self._read_job(owner)
                job_lost = job is None
            elif spec is not None and not problems:
                problems = await self._secret_problems(owner, spec)
                if problems:
                    self.queue.add_after((namespace, name), SECRET_RECHECK_SECONDS)
                else:
                    # ServiceAccount and Job only, then the rest in a normal-priority reconcile: in a
                    # burst, Job creation comes first for every new resource (apply -> Job latency).
                    # That reconcile takes the path below, as after a crash between the two steps.
                    job = await self._ensure_children(owner, spec)
                    self._deferred[(namespace, name)] = (body, job)
                    self.queue.add((namespace, name))
                    return
        elif job is not None and not status.get("jobName") and spec is not None:
            # A Job that no status records yet: just created (above), or an earlier reconcile created
            # it and stopped (crash, API error) before writing the status and the Job's companions.
            await self._ensure_companions(owner, spec, with_service_account=created_job is None)

        pods = [p for p in self.cache.pods(namespace, name) if job is not None and p.job_uid == job.uid]
        decision = decide(
            Observation(
                name=name,
                generation=body["metadata"].get("generation", 1),
                status=status,
                spec=spec,
                problems=problems,
                job_name=builders.child_name(name),
                job=job,
                pods=pods,
                now=self.clock(),
                job_lost=job_lost,
            )
        )
        for patch in decision.job_patches:
            await self.kube.merge_patch(job_path(namespace, builders.child_name(name)), patch)
        if decision.patch:
            try:
                written = await self.kube.json_patch(
                    resource_path(namespace, name, "status"),
                    status_json_patch(owner.uid, body.get("status"), decision.patch,
                                      body["metadata"].get("resourceVersion")),
                )
                # The watch event of this write needs no reconcile: this one computed it.
                self._fingerprints[(namespace, name)] = resource_fingerprint(written)
            except ApiError as e:
                if e.status == 404:
                    return  # deleted meanwhile
                if e.status in (409, 422):
                    # A failed test op: changed since read (often a trainer progress patch; the server
                    # does not say which test failed) or re-created under the same name. Nothing of the
                    # stale decision was written: decide again on a fresh read, at once. Refused again
                    # right after a fresh read means an invalid status: log it, look again later.
                    self._fresh.pop((namespace, name), None)
                    refusals = self._refusals.get((namespace, name), 0) + 1
                    self._refusals[(namespace, name)] = refusals
                    if refusals == 1:
                        self.queue.add_after((namespace, name), 0.05)
                        return
                    logger.warning("status patch of %s/%s refused: %s", namespace, name, e.message)
                    self.queue.add_after((namespace, name), 5.0)
                    return
                raise
            self._refusals.pop((namespace, name), None)
            metrics.STATUS_PATCHES.inc()
        self.phases.set((namespace, name), decision.status.get("phase"))

        if decision.events:
            task = asyncio.get_running_loop().create_task(self._post_in_background(body, decision.events))
            self._events.add(task)
            task.add_done_callback(self._events.discard)

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

    async def _secret_problems(self, owner: Owner, spec: Any) -> list[Problem]:
        secret, optional = builders.storage_secret_name(spec, self.settings)
        if secret is None or optional or not self._secret_check_allowed:
            return []
        try:
            found = await self.kube.get(core_path(owner.namespace, "secrets", secret), accept=PARTIAL_METADATA)
        except ApiError as e:
            if e.status == 403:
                # Without RBAC to check, the pod reports a missing Secret itself (CreateContainerConfigError).
                logger.warning("not allowed to check storage Secrets (%s); skipping that check", e.reason)
                self._secret_check_allowed = False
                return []
            raise
        if found is None:
            return [
                Problem(
                    "StorageSecretNotFound",
                    f"Secret {secret} (spec.storageSecretRef) not found in namespace {owner.namespace}",
                )
            ]
        return []

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
        body, created = await self._create(builders.job(owner, spec, self.settings))
        if controller_uid(body["metadata"]) != owner.uid:
            raise RetryLater(f"Job {builders.child_name(owner.name)} belongs to an earlier namesake, being deleted")
        if created:
            metrics.JOBS_CREATED.inc()
            logger.info("created Job %s/%s", owner.namespace, builders.child_name(owner.name))
        return JobView.from_job(body)

    async def _post_in_background(self, body: dict[str, Any], events: list[Event]) -> None:
        async with self._event_slots:
            for event in events:  # in order: Accepted before JobCreated
                await self.post_event(body, event)

    async def close(self) -> None:
        await self.queue.close()
        if self._events:
            await asyncio.wait(self._events, timeout=5)

    async def post_event(self, body: dict[str, Any], event: Event) -> None:
        meta = body["metadata"]
        now = self.clock()
        message = (
            event.message if len(event.message) <= MAX_EVENT_MESSAGE else event.message[: MAX_EVENT_MESSAGE - 3] + "..."
        )
        manifest = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": body.get("apiVersion", f"{contract.API_GROUP}/{contract.API_VERSION}"),
                "kind": contract.KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": event.type,
            "reason": event.reason,
            "message": message,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._instance,
        }
        try:
            await self.kube.create(core_path(meta["namespace"], "events"), manifest)
            metrics.EVENTS_POSTED.labels(type=event.type, reason=event.reason).inc()
        except (TimeoutError, ApiError, OSError) as e:
            # An Event is best effort: the status already says it.
            logger.warning("could not post event %s for %s/%s: %s", event.reason, meta["namespace"], meta["name"], e)
