"""A per-key work queue: coalesces triggers, one reconcile per key at a time, retries with backoff.

Watch events for a LoRAFineTune, its Job and its pods all trigger the same key; while a
reconcile runs, further triggers collapse into one rerun. Failures are retried with an
exponential backoff (the controller-runtime workqueue, in a few lines of asyncio).

Urgent keys (resources never reconciled: nothing exists for them yet) take the next free worker
before the others: in a burst of new resources, the companions, status writes and Events of the
ones already started must not delay the creation of the next Jobs.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable, Hashable

logger = logging.getLogger(__name__)


class WorkQueue:
    def __init__(
        self,
        handler: Callable[[Hashable], Awaitable[None]],
        concurrency: int = 16,
        base_backoff: float = 1.0,
        max_backoff: float = 60.0,
    ):
        self._handler = handler
        self._free = concurrency
        # Workers waiting for a slot: a heap of (0 urgent / 1 normal, arrival order, future).
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._urgent: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        self._tasks: dict[Hashable, asyncio.Task[None]] = {}
        self._base_backoff = base_backoff
        self._max_backoff = max_backoff
        self.failures = 0
        self.active = True  # False: adds are dropped (a standby replica, see leader.py)

    def add(self, key: Hashable, urgent: bool = False) -> None:
        if not self.active:
            return
        if urgent:
            self._urgent.add(key)
        self._dirty.add(key)
        if key not in self._tasks:
            self._tasks[key] = asyncio.get_running_loop().create_task(self._worker(key), name=f"reconcile {key}")

    def add_after(self, key: Hashable, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self.add, key)

    def forget(self, key: Hashable) -> None:
        self._dirty.discard(key)
        self._urgent.discard(key)

    async def _acquire(self, urgent: bool) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (0 if urgent else 1, next(self._order), slot))
        try:
            await slot
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled():
                self._release()  # granted while being cancelled: pass the slot on
            raise

    def _release(self) -> None:
        while self._waiting:
            _, _, slot = heapq.heappop(self._waiting)
            if not slot.done():
                slot.set_result(None)  # the slot passes straight to the most urgent waiter
                return
        self._free += 1

    @property
    def busy(self) -> int:
        return len(self._tasks)

    async def _worker(self, key: Hashable) -> None:
        attempt = 0
        try:
            while key in self._dirty:
                self._dirty.discard(key)
                try:
                    urgent = key in self._urgent
                    self._urgent.discard(key)
                    await self._acquire(urgent)
                    try:
                        await self._handler(key)
                    finally:
                        self._release()
                    attempt = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - any failure is retried
                    attempt += 1
                    self.failures += 1
                    delay = min(self._base_backoff * 2 ** (attempt - 1), self._max_backoff)
                    logger.warning("reconcile of %s failed (%s); retrying in %.0fs", key, exc, delay)
                    await asyncio.sleep(delay)
                    self._dirty.add(key)
        finally:
            self._tasks.pop(key, None)

    async def pause(self) -> None:
        """Drop every queued key and cancel the running handlers; adds are ignored until resume()."""
        self.active = False
        self._dirty.clear()
        self._urgent.clear()
        await self.close()

    def resume(self, keys: list[Hashable]) -> None:
        """Accept adds again, starting with `keys`."""
        self.active = True
        for key in keys:
            self.add(key)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
