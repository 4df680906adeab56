"""Kubernetes Events about a LoRAFineTune, posted in the background (best effort)."""

from __future__ import annotations

import asyncio
import logging
import os
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
