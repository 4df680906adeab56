"""HA: two operator processes, one Lease, on the real API server.

Only the leader creates Jobs; a SIGKILLed leader is replaced after about the lease duration (the
figure is printed); a frozen leader (SIGSTOP: a long pause, a partition) is fenced: once resumed it
writes nothing and stands by; a leader that shuts down hands over at once. No duplicate Job, no
duplicate Event, in any of them.
"""

from __future__ import annotations

import collections
import os
import signal
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.support.kube import Kube, Operator, wait_until
from tests.support.operator import SUCCESS, is_true, lease_holder, run_pod, spec

pytestmark = pytest.mark.integration

LEASE = "lft-ha"
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 15, 10, 2  # the defaults (settings.py, the chart)


@pytest.fixture
def replicas(kube: Kube, tmp_path) -> Iterator[tuple[str, Operator, Operator]]:
    """A namespace and two operators sharing one Lease in it: op-a leads, op-b stands by."""
    ns = f"lftha-{uuid.uuid4().hex[:8]}"  # outside the session operator's lft-it-* pattern
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    env = {"LFT_NAMESPACES": ns, "LFT_LEADER_ELECTION_NAMESPACE": ns, "LFT_LEADER_ELECTION_LEASE_NAME": LEASE}
    a, b = (Operator(kube.kubeconfig, tmp_path / f"{who}.log", **env) for who in ("op-a", "op-b"))
    try:
        a.start()
        wait_for_leader(kube, ns, "op-a")
        b.start()
        yield ns, a, b
    finally:
        b.stop()
        a.stop()
        kube.delete(f"/api/v1/namespaces/{ns}")
        kube.remove_pods(ns)


def wait_for_leader(kube: Kube, ns: str, who: str, timeout: float = 30) -> None:
    """Until `who` (a POD_NAME) holds the Lease, polled every 0.1 s."""
    wait_until(lambda: lease_holder(kube, ns, LEASE).startswith(f"{who}_"), timeout, interval=0.1,
               what=f"{who} holds the Lease")


def metric(op: Operator, name: str) -> float:
    lines = [line for line in op.metrics().splitlines() if line.startswith(name + " ")]
    return float(lines[0].split()[1]) if lines else 0.0


def writes_sent(op: Operator) -> float:
    """POST and PATCH requests the reconciler sent (the Lease is renewed with PUT)."""
    return sum(metric(op, f'lft_api_request_duration_seconds_count{{verb="{verb}"}}') for verb in ("POST", "PATCH"))


def assert_each_event_once(kube: Kube, ns: str, name: str) -> list[str]:
    reasons = kube.event_reasons(ns, name)
    twice = {r: n for r, n in collections.Counter(reasons).items() if n > 1}
    assert not twice, f"duplicate Events of {name}: {twice} in {reasons}"
    return reasons


def test_only_the_leader_acts_and_a_standby_takes_over_after_sigkill(kube, replicas):
    ns, a, b = replicas
    kube.create_lft(ns, "first", spec())
    pod = run_pod(kube, ns, "first")
    kube.wait_lft(ns, "first", lambda s: s.get("phase") == "Running")
    time.sleep(RETRY_PERIOD + 1)  # the standby saw every event too: time to (wrongly) act
    assert "created Job" in a.logs() and "created Job" not in b.logs()
    assert metric(b, "lft_jobs_created_total") == 0 and metric(b, "lft_status_patches_total") == 0
    assert (metric(a, "lft_leader"), metric(b, "lft_leader")) == (1, 0)
    (job,) = kube.jobs(ns, "first")

    a.kill()  # SIGKILL: the leader's Lease is left to expire
    killed = time.monotonic()
    kube.kubelet_exit(pod, 0, SUCCESS)  # the run ends while nobody leads
    kube.create_lft(ns, "second", spec())  # and a new resource arrives
    wait_for_leader(kube, ns, "op-b", timeout=LEASE_DURATION + 15)
    failover = time.monotonic() - killed
    print(f"\nfailover after SIGKILL of the leader: {failover:.1f} s (lease {LEASE_DURATION} s)")
    # Not before the old leader's renew deadline (it might only be cut off, not dead), and about one
    # lease duration after its last renewal the standby saw (renewals and polls every 2 s).
    assert RENEW_DEADLINE < failover <= LEASE_DURATION + RETRY_PERIOD + 1.5

    kube.wait_lft(ns, "first", lambda s: s.get("phase") == "Succeeded", timeout=30)
    kube.wait_lft(ns, "second", lambda s: is_true(s, "Accepted"), timeout=30)
    assert [j["metadata"]["uid"] for j in kube.jobs(ns, "first")] == [job["metadata"]["uid"]]
    assert len(kube.jobs(ns, "second")) == 1 and "created Job" in b.logs()
    assert metric(b, "lft_leader") == 1
    time.sleep(RETRY_PERIOD)
    assert {"JobCreated", "Succeeded"} <= set(assert_each_event_once(kube, ns, "first"))
    assert "JobCreated" in assert_each_event_once(kube, ns, "second")


def test_a_frozen_leader_is_fenced_and_a_clean_shutdown_hands_over_at_once(kube, replicas):
    ns, a, b = replicas
    kube.create_lft(ns, "before", spec())
    kube.wait_lft(ns, "before", lambda s: is_true(s, "Accepted"))
    # The leader is idle (its Events, posted after the status write, are out) before it freezes.
    wait_until(lambda: "JobCreated" in kube.event_reasons(ns, "before"), 15, what="JobCreated Event")
    time.sleep(1)
    sent = writes_sent(a)
    os.kill(a.proc.pid, signal.SIGSTOP)  # a long pause: its renewals stop, its process does not die
    try:
        kube.create_lft(ns, "during", spec())  # its watch delivers this when it wakes up
        wait_for_leader(kube, ns, "op-b", timeout=LEASE_DURATION + 15)
        kube.wait_lft(ns, "during", lambda s: is_true(s, "Accepted"), timeout=30)
        seen = len(a.logs())
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    # Awake, a still believes for an instant that it leads, with a queue of watch events: its client
    # refuses every write (the renew deadline has passed) and it steps down.
    wait_until(lambda: "lost the Lease" in a.logs()[seen:], 15, what="the old leader steps down")
    time.sleep(RETRY_PERIOD + 1)
    woke = a.logs()[seen:]
    assert "created Job" not in woke and metric(a, "lft_leader") == 0
    assert "retrying" not in woke  # a write refused for want of the Lease ends the reconcile, no retry
    assert writes_sent(a) == sent, "the fenced replica sent writes after it woke up"
    assert lease_holder(kube, ns, LEASE).startswith("op-b_")

    stopping = time.monotonic()
    b.stop()  # SIGTERM: b stops reconciling, then releases the Lease
    wait_for_leader(kube, ns, "op-a", timeout=LEASE_DURATION)
    handover = time.monotonic() - stopping
    print(f"\nhandover after SIGTERM of the leader: {handover:.1f} s")
    assert handover < RENEW_DEADLINE  # released: no waiting for the lease to expire
    kube.create_lft(ns, "after", spec())
    kube.wait_lft(ns, "after", lambda s: is_true(s, "Accepted"), timeout=30)
    for name in ("before", "during", "after"):
        assert len(kube.jobs(ns, name)) == 1, name
        assert "JobCreated" in assert_each_event_once(kube, ns, name)
