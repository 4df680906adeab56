"""Kubernetes Events: those about a LoRAFineTune, posted in the background (best effort), and the Job
controller's FailedCreate Events, looked up by namespace (FailedCreateEvents)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from lft_api import contract

from . import builders, metrics
from .kube import ApiError, Kube, NotLeader, core_path
from .status import Event

logger = logging.getLogger(__name__)

COMPONENT = builders.MANAGED_BY
MAX_EVENT_MESSAGE = 1024
EVENT_CONCURRENCY = 2  # Events are posted in the background, a few at a time: Jobs first


def event_manifest(body: dict[str, Any], event: Event, now: str, instance: str) -> dict[str, Any]:
    meta = body["metadata"]
    message = event.message
    if len(message) > MAX_EVENT_MESSAGE:
        message = message[: MAX_EVENT_MESSAGE - 3] + "..."
    return {
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
        "reportingInstance": instance,
    }


class EventPoster:
    def __init__(self, kube: Kube, clock: Callable[[], str]):
        self.kube = kube
        self.clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(EVENT_CONCURRENCY)
        self._instance = os.environ.get("HOSTNAME", "lft-operator")

    def post_in_background(self, body: dict[str, Any], events: list[Event]) -> None:
        task = asyncio.get_running_loop().create_task(self._post_all(body, events))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_all(self, body: dict[str, Any], events: list[Event]) -> None:
        async with self._slots:
            for event in events:  # in order: Accepted before JobCreated
                await self.post(body, event)

    async def post(self, body: dict[str, Any], event: Event) -> None:
        meta = body["metadata"]
        try:
            manifest = event_manifest(body, event, self.clock(), self._instance)
            await self.kube.create(core_path(meta["namespace"], "events"), manifest)
            metrics.EVENTS_POSTED.labels(type=event.type, reason=event.reason).inc()
        except (TimeoutError, ApiError, OSError) as e:
            # An Event is best effort: the status already says it.
            logger.warning("could not post event %s for %s/%s: %s", event.reason, meta["namespace"], meta["name"], e)
        except NotLeader:
            logger.info("event %s for %s/%s not posted: not the leader", event.reason, meta["namespace"], meta["name"])

    async def cancel(self) -> None:
        """Drop the Events not posted yet (leadership lost)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)


FAILED_CREATE_SELECTOR = "involvedObject.kind=Job,reason=FailedCreate"


class FailedCreateEvents:
    """The Job controller's FailedCreate Events of a namespace's Jobs, by Job uid: one list per namespace serves
    every lookup of the next `window` seconds. In a burst of new Jobs whose pods the Job controller has not created
    yet (kube-controller-manager creates them at its --kube-api-qps, 20/s by default), the reconciles look for
    FailedCreate Events of most of them: one request per namespace and window instead of one per Job (each of
    which the API server answered by scanning every Event of the namespace anyway). An Event posted after the
    list is seen by a later look (the reconciler looks again every few seconds while a Job has no pod).
    A failed list (403: no RBAC for Events) is raised to every lookup that shared it and not kept."""

    def __init__(self, kube: Kube, window: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.kube = kube
        self.window = window
        self.clock = clock
        self._lists: dict[str, tuple[float, asyncio.Task[dict[str, list[dict[str, Any]]]]]] = {}

    async def of_job(self, namespace: str, job_uid: str) -> list[dict[str, Any]]:
        started, task = self._lists.get(namespace, (0.0, None))
        if task is None or self.clock() - started > self.window or _failed(task):
            loop = asyncio.get_running_loop()
            task = loop.create_task(self._list(namespace), name=f"FailedCreate Events of {namespace}")
            task.add_done_callback(_failed)
            self._lists[namespace] = (self.clock(), task)
            loop.call_later(self.window, self._expire, namespace, task)
        # Shielded: a cancelled lookup (leadership lost) leaves the list to the others that wait on it.
        return (await asyncio.shield(task)).get(job_uid, [])

    async def _list(self, namespace: str) -> dict[str, list[dict[str, Any]]]:
        items = await self.kube.list_items(core_path(namespace, "events"), fieldSelector=FAILED_CREATE_SELECTOR)
        by_job: dict[str, list[dict[str, Any]]] = {}
        for event in items:
            uid = (event.get("involvedObject") or {}).get("uid")
            if uid:
                by_job.setdefault(uid, []).append(event)
        return by_job

    def _expire(self, namespace: str, task: asyncio.Task[Any]) -> None:
        if self._lists.get(namespace, (0.0, None))[1] is task:
            del self._lists[namespace]


def _failed(task: asyncio.Task[Any]) -> bool:
    """Done without a result (its exception read: asyncio never logs it as unretrieved; the lookups raise it)."""
    return task.done() and (task.cancelled() or task.exception() is not None)
