"""Work-arounds for two kopf 1.45 defects that leave the operator blind without a word.

1. A namespace created while the operator starts is never watched (the warm-up stall of the
   integration tests, about one session in five). With a namespace list or pattern, kopf lists the
   namespaces once (kopf/_core/reactor/observation.py, namespace_observer: fetch_objs), then starts
   a watcher on them, whose own first listing (kopf/_cogs/clients/watching.py, continuous_watch)
   yields each namespace as an event of type None, and process_discovered_namespace_event drops
   those (`if raw_event['type'] is None: return`). A namespace created between the two listings is
   only in the second: dropped, and no watch event follows until it changes again. No resource in
   it is reconciled; its deletion (a MODIFIED event) finally adds it. The same after each relist of
   the watch (410 Gone): namespaces created while disconnected are dropped. Here the watcher's
   listing is revised like the first one (idempotent: a namespace already watched stays so).

2. A namespace gone before its first listing holds every handler forever. kopf holds every handler
   until each indexed resource (we index Jobs, pods and LoRAFineTunes, see handlers.py) has listed
   once in each watched namespace: one toggle per (resource, namespace) in a global set
   (orchestration.py, spawn_missing_watchers), dropped by the watcher when its listing ends
   (queueing.py, watcher: Bookmark.LISTED) and awaited by each object's worker (processing.py,
   process_resource_event: operator_indexed.wait_for(True)). When a namespace leaves the watched set
   (deleted, or Terminating: observation.py, revise_namespaces) its watchers are cancelled
   (orchestration.py, terminate_redundancies) but nothing drops their toggles: one cancelled before
   its listing ended (a slow or refused listing) stays off for good. The same for the per-object
   toggle of a worker cancelled before it indexed its object. Here each watcher and worker drops its
   own toggle when it ends, however it ends: a handler still runs only once every (resource,
   namespace) that is watched has listed; one no longer watched (its namespace gone) no longer counts.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import kopf
from kopf._core.reactor import observation, queueing

logger = logging.getLogger(__name__)

PATCHED = "_lft_workaround"
_drops: set[asyncio.Task[Any]] = set()  # toggle drops scheduled by ending tasks (kept referenced)


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


def _listing_counts(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def wrapper(*, raw_event: Any, **kwargs: Any) -> Any:
        if raw_event.get("type") is None:  # from the watcher's (re)listing: as in the first listing
            raw_event = {**raw_event, "type": "ADDED"}
            name = (raw_event.get("object") or {}).get("metadata", {}).get("name")
            before = set(kwargs["insights"].namespaces)
            result = await original(raw_event=raw_event, **kwargs)
            if name not in before and name in kwargs["insights"].namespaces:
                logger.info("kopf: namespace %s found by the watch's listing only (kopf would have missed it)", name)
            return result
        return await original(raw_event=raw_event, **kwargs)

    setattr(wrapper, PATCHED, True)
    return wrapper


def _wrap(module: Any, name: str, wrap: Callable[..., Any], params: set[str]) -> None:
    original = getattr(module, name, None)
    if original is None or not params <= set(inspect.signature(original).parameters):
        raise RuntimeError(f"kopf {kopf.__version__}: {module.__name__}.{name} changed; review kopf_workarounds.py")
    if not getattr(original, PATCHED, False):
        setattr(module, name, wrap(original))


def install() -> None:
    """Wrap kopf's functions (idempotent). Fails loudly on a kopf whose internals moved."""
    for name in ("watcher", "worker"):
        _wrap(queueing, name, _dropping_its_toggle, {"operator_indexed", "resource_indexed"})
    _wrap(observation, "process_discovered_namespace_event", _listing_counts, {"raw_event", "insights"})
