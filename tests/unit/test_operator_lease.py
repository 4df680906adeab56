"""Leader election decisions (lft_operator.lease): acquire, renew, expire, step down, release, with a hand-set clock."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lft_operator.lease import Action, LeaseRecord, LeaseState, Timing, micro_time
from lft_operator.settings import Settings

T = Timing(lease_duration=15, renew_deadline=10.0, retry_period=2.0)
WALL = "2026-12-01T00:00:00.000000Z"


def held_by(holder: str, transitions: int = 0, renew: str = WALL) -> LeaseRecord:
    return LeaseRecord(holder=holder, duration=15, acquire_time=WALL, renew_time=renew, transitions=transitions)


def leader(now: float = 0.0) -> LeaseState:
    state = LeaseState("a", T)
    state.observe(None, now)
    state.written(state.desired(WALL), now)
    return state


def test_no_lease_is_created_and_the_creator_leads():
    state = LeaseState("a", T)
    state.observe(None, 0.0)
    assert state.action(0.0) is Action.CREATE and not state.leading(0.0)
    record = state.desired(WALL)
    assert (record.holder, record.duration, record.transitions) == ("a", 15, 0)
    assert record.spec() == {"holderIdentity": "a", "leaseDurationSeconds": 15, "acquireTime": WALL,
                             "renewTime": WALL, "leaseTransitions": 0}
    state.written(record, 0.0)
    assert state.leading(0.0) and state.leading(9.99)


def test_a_lease_held_by_another_is_waited_for_until_it_expires_as_seen_here():
    state = LeaseState("b", T)
    # The record says it was renewed long ago (another node's clock): not trusted, the lease counts
    # from when this candidate saw it.
    state.observe(held_by("a", renew="2000-01-01T00:00:00.000000Z"), 100.0)
    assert state.action(100.0) is Action.WAIT and state.action(114.99) is Action.WAIT
    assert state.action(115.0) is Action.WRITE
    taken = state.desired(WALL)
    assert (taken.holder, taken.transitions, taken.acquire_time) == ("b", 1, WALL)


def test_a_renewal_seen_restarts_the_wait():
    state = LeaseState("b", T)
    state.observe(held_by("a"), 0.0)
    state.observe(held_by("a"), 2.0)  # unchanged: the first sighting counts
    assert state.observed_at == 0.0
    state.observe(held_by("a", renew="2026-12-01T00:00:02.000000Z"), 12.0)
    assert state.action(16.0) is Action.WAIT and state.action(26.99) is Action.WAIT
    assert state.action(27.0) is Action.WRITE


def test_a_released_lease_is_taken_at_once():
    state = LeaseState("b", T)
    state.observe(LeaseRecord(holder="", duration=1, renew_time=WALL, transitions=3), 50.0)
    assert state.action(50.0) is Action.WRITE
    assert state.desired(WALL).transitions == 3  # no holder to take it from: no transition


def test_the_leader_renews_and_keeps_its_acquire_time():
    state = leader()
    state.observe(state.record, 2.0)
    assert state.action(2.0) is Action.WRITE
    renewed = state.desired("2026-12-01T00:00:02.000000Z")
    assert renewed.acquire_time == WALL and renewed.renew_time.endswith("02.000000Z") and renewed.transitions == 0
    state.written(renewed, 2.0)
    assert state.leading(11.99) and not state.leading(12.0)


def test_the_leader_steps_down_at_the_renew_deadline_without_a_renewal():
    state = leader(0.0)
    assert state.leading(9.99)
    assert not state.leading(10.0)  # failed renewals (API down) change nothing: the deadline decides
    # ... and before any standby may take over (15 s after it saw the last renewal, sent at 0 or later).
    standby = LeaseState("b", T)
    standby.observe(state.record, 0.0)
    assert standby.action(10.0) is Action.WAIT and standby.action(15.0) is Action.WRITE


def test_another_holder_seen_ends_the_leadership_at_once():
    state = leader(0.0)
    state.observe(held_by("b", transitions=1), 1.0)
    assert not state.leading(1.0) and state.action(1.0) is Action.WAIT


def test_delay_retries_and_never_sleeps_past_a_deadline():
    state = leader(0.0)
    assert state.delay(0.0) == 2.0
    assert state.delay(9.0) == pytest.approx(1.0)  # the last chance to renew starts before the deadline
    assert state.attempt_timeout(9.0) == pytest.approx(1.0)  # and an attempt ends at the deadline
    standby = LeaseState("b", T)
    standby.observe(held_by("a"), 0.0)
    assert standby.delay(0.0) == 2.0
    assert standby.delay(14.5) == pytest.approx(0.5)  # woken when the lease runs out, not a retry later
    assert standby.attempt_timeout(0.0) == 10.0


def test_release_hands_the_lease_back_only_when_held():
    state = leader(0.0)
    released = state.released("2026-12-01T00:00:05.000000Z")
    assert (released.holder, released.duration, released.acquire_time) == ("", 1, WALL)
    assert released.spec()["holderIdentity"] is None
    standby = LeaseState("b", T)
    standby.observe(held_by("a"), 0.0)
    assert standby.released(WALL) is None


def test_two_candidates_one_lease():
    """Both see an expired lease and write; the API server's resourceVersion check lets one write
    succeed (the other gets 409 and reads again): only the winner leads."""
    a, b = LeaseState("a", T), LeaseState("b", T)
    for s in (a, b):
        s.observe(held_by("old"), 0.0)
        assert s.action(15.0) is Action.WRITE
    a.written(a.desired(WALL), 15.0)
    b.observe(a.record, 15.1)  # b's write was refused; it reads a's record
    assert a.leading(15.1) and not b.leading(15.1) and b.action(15.1) is Action.WAIT


def test_lease_from_the_api_and_micro_time():
    body = {"spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": WALL, "leaseTransitions": 2}}
    assert LeaseRecord.from_lease(body) == LeaseRecord("a", 15, None, WALL, 2)
    assert LeaseRecord.from_lease({"spec": {}}) == LeaseRecord("", 0, None, None, 0)
    assert len(micro_time()) == len(WALL) and micro_time().endswith("Z")


@pytest.mark.parametrize("lease, renew, retry", [(10, 10, 2), (15, 10, 10), (15, 10, 0)])
def test_timing_must_nest(lease, renew, retry):
    with pytest.raises(ValueError, match="lease duration > renew deadline > retry period"):
        Timing(lease, renew, retry)
    env = {
        "LFT_LEADER_ELECTION_LEASE_DURATION_SECONDS": str(lease),
        "LFT_LEADER_ELECTION_RENEW_DEADLINE_SECONDS": str(renew),
        "LFT_LEADER_ELECTION_RETRY_PERIOD_SECONDS": str(retry),
    }
    with pytest.raises(ValidationError, match="LEASE_DURATION|greater than 0"):
        Settings.from_env(env)


def test_identity_is_the_pod_name_and_a_random_suffix():
    from lft_operator.leader import identity

    first, second = identity({"POD_NAME": "lft-op-7d9f-abcde"}), identity({"POD_NAME": "lft-op-7d9f-abcde"})
    assert first.startswith("lft-op-7d9f-abcde_") and len(first) == len("lft-op-7d9f-abcde_") + 8
    assert first != second  # a restarted container is a new candidate


def test_lease_namespace_setting_then_the_pods_namespace():
    from lft_operator.leader import lease_namespace

    assert lease_namespace(Settings.from_env({"LFT_LEADER_ELECTION_NAMESPACE": "ops"}), {"OPERATOR_NAMESPACE": "x"}) == "ops"
    assert lease_namespace(Settings.from_env({}), {"OPERATOR_NAMESPACE": "lft-system"}) == "lft-system"


def test_the_reconcilers_client_refuses_writes_without_the_lease():
    """The write gate acts before any request leaves the process (no server behind this address)."""
    import asyncio

    from kubernetes.client import Configuration

    from lft_operator.kube import Kube, NotLeader

    leading = {"now": False}
    kube = Kube(Configuration(host="http://127.0.0.1:9"), write_gate=lambda: leading["now"])

    async def writes() -> list[str]:
        refused = []
        for call in (kube.create("/api/v1/namespaces/a/events", {}), kube.merge_patch("/x", {}),
                     kube.json_patch("/x", []), kube.replace("/x", {})):
            try:
                await call
            except NotLeader as e:
                refused.append(str(e).split()[0])
        await kube.close()
        return refused

    assert asyncio.run(writes()) == ["POST", "PATCH", "PATCH", "PUT"]


def test_work_queue_pause_cancels_in_flight_work_and_drops_adds_until_resume():
    """Leadership lost: the running reconcile is cancelled at once, queued and later adds are dropped
    (retries and re-checks included); regained: only what resume() is given (every known key) runs."""
    import asyncio

    from lft_operator.workqueue import WorkQueue

    started: list[str] = []
    finished: list[str] = []

    async def handler(key):
        started.append(key)
        await asyncio.sleep(0.2 if key == "slow" else 0)
        finished.append(key)

    async def scenario() -> WorkQueue:
        q = WorkQueue(handler, concurrency=1)
        q.add("slow")
        q.add("queued")  # waits for the only slot
        await asyncio.sleep(0.02)
        await q.pause()
        q.add("while-paused")
        q.add_after("retry", 0.01)
        await asyncio.sleep(0.3)
        assert (started, finished, q.busy) == (["slow"], [], 0)
        q.resume(["slow", "queued"])
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not q.busy:
                break
        return q

    asyncio.run(scenario())
    assert started == ["slow", "slow", "queued"] and finished == ["slow", "queued"]
