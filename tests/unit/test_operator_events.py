"""The Job controller's FailedCreate Events, looked up by namespace (lft_operator.events.FailedCreateEvents)."""

from __future__ import annotations

import asyncio

import pytest

from lft_operator.events import FAILED_CREATE_SELECTOR, FailedCreateEvents
from lft_operator.kube import ApiError


def failed_create(job_uid: str, message: str) -> dict:
    return {"involvedObject": {"kind": "Job", "uid": job_uid}, "reason": "FailedCreate", "message": message}


class FakeKube:
    def __init__(self, items: list[dict], error: ApiError | None = None):
        self.items = items
        self.error = error
        self.lists: list[tuple[str, dict]] = []

    async def list_items(self, path: str, **params: str) -> list[dict]:
        self.lists.append((path, params))
        await asyncio.sleep(0)  # lookups of the same moment share this list
        if self.error is not None:
            raise self.error
        return self.items


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lookups_of_one_window_share_one_list_of_the_namespace() -> None:
    kube = FakeKube([failed_create("j1", "exceeded quota"), failed_create("j2", "forbidden")])
    clock = Clock()
    lookup = FailedCreateEvents(kube, window=1.0, clock=clock)  # type: ignore[arg-type]

    async def scenario() -> tuple[list, ...]:
        first = await asyncio.gather(*(lookup.of_job("ns", uid) for uid in ("j1", "j2", "j3")))
        clock.now += 0.5
        again = await lookup.of_job("ns", "j1")  # same window: no request
        other = await lookup.of_job("other", "j1")  # another namespace: its own list
        clock.now += 1.0
        later = await lookup.of_job("ns", "j2")  # window over: listed again
        return (*first, again, other, later)

    j1, j2, j3, again, other, later = asyncio.run(scenario())
    assert [e["message"] for e in j1] == ["exceeded quota"] and [e["message"] for e in j2] == ["forbidden"]
    assert j3 == [] and again == j1 and other == j1 and later == j2
    assert [path for path, _ in kube.lists] == [
        "/api/v1/namespaces/ns/events",
        "/api/v1/namespaces/other/events",
        "/api/v1/namespaces/ns/events",
    ]
    assert all(params == {"fieldSelector": FAILED_CREATE_SELECTOR} for _, params in kube.lists)


def test_a_refused_list_reaches_every_lookup_that_shared_it_and_is_not_kept() -> None:
    kube = FakeKube([], error=ApiError(403, "Forbidden", "events is forbidden"))
    lookup = FailedCreateEvents(kube, window=60.0, clock=Clock())  # type: ignore[arg-type]

    async def scenario() -> list:
        return await asyncio.gather(lookup.of_job("ns", "j1"), lookup.of_job("ns", "j2"), return_exceptions=True)

    results = asyncio.run(scenario())
    assert all(isinstance(r, ApiError) and r.status == 403 for r in results)
    assert len(kube.lists) == 1
    kube.error = None
    assert asyncio.run(lookup.of_job("ns", "j1")) == []  # asked again, not the cached failure
    assert len(kube.lists) == 2


def test_a_cancelled_lookup_leaves_the_shared_list_to_the_others() -> None:
    kube = FakeKube([failed_create("j1", "exceeded quota")])
    lookup = FailedCreateEvents(kube, clock=Clock())  # type: ignore[arg-type]

    async def scenario() -> list:
        cancelled = asyncio.ensure_future(lookup.of_job("ns", "j1"))
        kept = asyncio.ensure_future(lookup.of_job("ns", "j1"))
        await asyncio.sleep(0)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        return await kept

    assert [e["message"] for e in asyncio.run(scenario())] == ["exceeded quota"]
    assert len(kube.lists) == 1
