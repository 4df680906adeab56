"""A work-around for kopf's index gate (kopf 1.45): a watcher that stops before its first listing
must not hold every handler of the operator forever.

kopf holds every handler until each indexed resource (we index Jobs, pods and LoRAFineTunes, see
handlers.py) has listed once in each watched namespace: one toggle per (resource, namespace) in a
global set (kopf/_core/reactor/orchestration.py, spawn_missing_watchers), turned on by the watcher
when its listing ends (queueing.py, watcher: Bookmark.LISTED) and waited for by each object's
worker (processing.py, process_resource_event: operator_indexed.wait_for(True)). When a namespace
leaves the watched set (deleted, or found Terminating: observation.py, revise_namespaces), its
watchers are cancelled (orchestration.py, terminate_redundancies), but nothing drops their toggles:
one cancelled before its listing ended (a slow or refused list, then the namespace goes) stays off
for good, and no resource in any namespace is reconciled again ("Unprocessed streams left for
lorafinetunes" at shutdown). The same holds for the per-object toggle of a worker cancelled before it
indexed its object.

Here each watcher and worker drops its own toggle when it ends, however it ends. That keeps kopf's
guarantee where it matters: a handler still runs only once every (resource, namespace) that is
watched has listed; one that is no longer watched no longer counts (its namespace is gone).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import kopf
from kopf._core.reactor import queueing

logger = logging.getLogger(__name__)

PATCHED = "_lft_drops_its_toggle"
_drops: set[asyncio.Task] = set()  # toggle drops scheduled by ending tasks (kept referenced)


def _still_holding(toggles: Any, toggle: Any) -> bool:
    return any(t is toggle for t in toggles)


def _dropping_its_toggle(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def wrapper(*args: Any, operator_indexed: Any = None, resource_indexed: Any = None, **kwargs: Any) -> Any:
        try:
            return await original(*args, operator_indexed=operator_indexed, resource_indexed=resource_indexed, **kwargs)
        finally:
            if operator_indexed is not None and resource_indexed is not None:
                if _still_holding(operator_indexed, resource_indexed):
                    # Normal at shutdown; otherwise the namespace went away while (or before) it was listed.
                    logger.info("kopf: %s stopped before its first listing: it no longer holds the handlers",
                                resource_indexed.name or original.__name__)
                # A task of its own: this one may be cancelled again while it waits for the lock.
                drop = asyncio.get_running_loop().create_task(operator_indexed.drop_toggle(resource_indexed))
                _drops.add(drop)
                drop.add_done_callback(_drops.discard)

    setattr(wrapper, PATCHED, True)
    return wrapper


def install() -> None:
    """Wrap kopf's watcher and worker (idempotent). Fails loudly on a kopf whose internals moved."""
    for name in ("watcher", "worker"):
        original = getattr(queueing, name, None)
        if original is None or getattr(original, PATCHED, False):
            if original is None:
                raise RuntimeError(f"kopf {kopf.__version__}: no queueing.{name}; review lft_operator/kopf_gate.py")
            continue
        params = inspect.signature(original).parameters
        if not {"operator_indexed", "resource_indexed"} <= set(params):
            raise RuntimeError(f"kopf {kopf.__version__}: queueing.{name} has no index toggles; review kopf_gate.py")
        setattr(queueing, name, _dropping_its_toggle(original))
