"""The kopf 1.45 work-arounds (lft_operator/kopf_workarounds.py), run against kopf's own functions.

A namespace created between kopf's first namespace listing and its watcher's listing reaches the
operator only as an event of that listing (type None), which kopf drops: no resource in it was ever
reconciled (the integration tests' warm-up stall). The timing cannot be hit on purpose on a real API
server, so these tests drive kopf's namespace processor with such an event directly.
"""

from __future__ import annotations

import asyncio

from kopf._cogs.structs import references
from kopf._core.reactor import observation, queueing

from lft_operator import kopf_workarounds

PATTERNS = ["lft-it-*"]


def _namespaces_after(processor, *events: dict) -> set[str]:
    async def run() -> set[str]:
        insights = references.Insights()
        for event in events:
            await processor(raw_event=event, namespaces=PATTERNS, insights=insights)
        return set(insights.namespaces)

    return asyncio.run(run())


def _listed(name: str, **metadata) -> dict:
    return {"type": None, "object": {"metadata": {"name": name, **metadata}}}


def test_kopf_alone_drops_a_namespace_seen_only_in_the_watch_listing():
    # The defect itself: if kopf stops dropping these, the work-around can go.
    original = getattr(observation.process_discovered_namespace_event, "__wrapped__",
                       observation.process_discovered_namespace_event)
    assert _namespaces_after(original, _listed("lft-it-new")) == set()


def test_a_namespace_seen_only_in_the_watch_listing_is_watched():
    kopf_workarounds.install()
    processor = observation.process_discovered_namespace_event
    assert _namespaces_after(processor, _listed("lft-it-new")) == {"lft-it-new"}
    # Still kopf's rules: a namespace outside the patterns, or one being deleted, is not watched.
    assert _namespaces_after(processor, _listed("other")) == set()
    terminating = _listed("lft-it-old", deletionTimestamp="2026-12-01T00:00:00Z")
    # kopf 1.45 lets a namespace go once its status shows nothing blocks the deletion.
    terminating["object"]["status"] = {"conditions": [{"type": "NamespaceContentRemaining", "status": "False"}]}
    assert _namespaces_after(processor, _listed("lft-it-old"), terminating) == set()
    # Real watch events pass through unchanged.
    added = {"type": "ADDED", "object": {"metadata": {"name": "lft-it-a"}}}
    deleted = {"type": "DELETED", "object": {"metadata": {"name": "lft-it-a"}}}
    assert _namespaces_after(processor, added) == {"lft-it-a"}
    assert _namespaces_after(processor, added, deleted) == set()


def test_install_is_idempotent_and_wraps_the_watcher_and_worker():
    kopf_workarounds.install()
    wrapped = (queueing.watcher, queueing.worker, observation.process_discovered_namespace_event)
    kopf_workarounds.install()
    assert (queueing.watcher, queueing.worker, observation.process_discovered_namespace_event) == wrapped
    assert all(getattr(f, kopf_workarounds.PATCHED, False) for f in wrapped)
