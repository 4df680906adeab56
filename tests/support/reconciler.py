"""A Reconciler for unit tests, with its dependencies passed in: a queue and an Event sink that record."""

from __future__ import annotations

from typing import Any

from lft_operator.reconcile import Reconciler
from lft_operator.settings import Settings


class RecordingQueue:
    """The work queue's interface; records what would be reconciled, and when."""

    def __init__(self) -> None:
        self.added: list = []
        self.urgent: list = []
        self.delayed: list[tuple[Any, float]] = []

    def add(self, key, urgent: bool = False) -> None:
        self.added.append(key)
        if urgent:
            self.urgent.append(key)

    def add_after(self, key, delay: float) -> None:
        self.delayed.append((key, delay))

    def forget(self, key) -> None:
        pass

    async def close(self) -> None:
        pass


class RecordingEvents:
    def __init__(self) -> None:
        self.posted: list = []

    def post_in_background(self, body: dict, events: list) -> None:
        self.posted += [(body["metadata"]["name"], e) for e in events]

    async def cancel(self) -> None:
        pass

    async def close(self) -> None:
        pass


def make_reconciler(kube: Any = None, cache: Any = None, **settings: Any) -> tuple[Reconciler, RecordingQueue,
                                                                                     RecordingEvents]:
    queue, events = RecordingQueue(), RecordingEvents()
    reconciler = Reconciler(kube, Settings(metrics_port=0, **settings), cache,
                            queue=queue, events=events)  # type: ignore[arg-type]
    return reconciler, queue, events
