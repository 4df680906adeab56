"""Leader election decisions on a coordination.k8s.io/v1 Lease, as client-go's leaderelection makes them (pure).

Time is passed in (monotonic seconds of this process), so every rule here is unit-tested with a
hand-set clock; leader.py does the API calls and the waiting.

- A candidate never trusts another process's clock: a lease held by someone else expires
  `leaseDurationSeconds` after this candidate last *saw it change* (renewTime, holder or
  transitions), not after the renewTime written in it (client-go does the same).
- The leader leads only while its last successful renewal is younger than the renew deadline
  (10 s by default), measured from when that renewal was *sent*. The lease lasts 15 s from when
  a standby saw it, which is later: the old leader has stopped before a standby may take over.
- A holder that shuts down cleanly releases the lease (empty holder): a standby takes it at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any


@dataclass(frozen=True)
class Timing:
    lease_duration: int = 15  # leaseDurationSeconds written in the Lease: how long standbys wait
    renew_deadline: float = 10.0  # the leader steps down when it could not renew for this long
    retry_period: float = 2.0  # renewals and acquisition attempts, this often

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ValueError(
                "leader election timing needs lease duration > renew deadline > retry period > 0, got "
                f"{self.lease_duration} / {self.renew_deadline} / {self.retry_period}"
            )


@dataclass(frozen=True)
class LeaseRecord:
    """The Lease's spec: who holds it and since when ("" when released or never held)."""

    holder: str = ""
    duration: int = 15
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def from_lease(cls, body: dict[str, Any]) -> LeaseRecord:
        spec = body.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or "",
            duration=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def spec(self) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder or None,
            "leaseDurationSeconds": self.duration,
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.transitions,
        }


class Action(Enum):
    CREATE = "create"  # no Lease yet
    WRITE = "write"  # take it (free, released or expired) or renew it (ours)
    WAIT = "wait"  # someone else holds a lease that has not expired


def micro_time(now: datetime | None = None) -> str:
    """A metav1.MicroTime: RFC 3339 with microseconds, UTC."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseState:
    """One candidate's knowledge of the lease and of its own leadership."""

    def __init__(self, identity: str, timing: Timing):
        self.identity = identity
        self.timing = timing
        self.record: LeaseRecord | None = None  # as last read or written
        self.exists = False
        self.observed_at: float | None = None  # when the record last changed, as seen here
        self.renewed_at: float | None = None  # when this replica's last successful write was sent

    def observe(self, record: LeaseRecord | None, now: float) -> None:
        """A read of the Lease (None: it does not exist)."""
        self.exists = record is not None
        if record != self.record or self.observed_at is None:
            self.record, self.observed_at = record, now
        if record is not None and record.holder != self.identity:
            self.renewed_at = None  # someone else holds it: whatever this replica thought, it leads no more

    def expired(self, now: float) -> bool:
        record = self.record
        if record is None or not record.holder:
            return True
        return now >= (self.observed_at or 0.0) + record.duration

    def action(self, now: float) -> Action:
        if not self.exists:
            return Action.CREATE
        if self.record is not None and (self.record.holder == self.identity or self.expired(now)):
            return Action.WRITE
        return Action.WAIT

    def desired(self, wall: str) -> LeaseRecord:
        """The record this replica writes to take or renew the lease."""
        old = self.record
        if old is not None and old.holder == self.identity:
            return replace(old, duration=self.timing.lease_duration, renew_time=wall)
        return LeaseRecord(
            holder=self.identity,
            duration=self.timing.lease_duration,
            acquire_time=wall,
            renew_time=wall,
            transitions=(old.transitions + 1) if old is not None and old.holder else (old.transitions if old else 0),
        )

    def released(self, wall: str) -> LeaseRecord | None:
        """The record that hands the lease back (None when this replica does not hold it)."""
        old = self.record
        if old is None or old.holder != self.identity:
            return None
        return replace(old, holder="", duration=1, renew_time=wall)

    def written(self, record: LeaseRecord, sent_at: float) -> None:
        """A write of `record`, sent at `sent_at`, succeeded."""
        self.record, self.exists, self.observed_at = record, True, sent_at
        self.renewed_at = sent_at if record.holder == self.identity else None

    def leading(self, now: float) -> bool:
        return self.renewed_at is not None and now < self.renewed_at + self.timing.renew_deadline

    def step_down(self) -> None:
        self.renewed_at = None

    def delay(self, now: float) -> float:
        """Seconds to the next attempt: the retry period, or sooner when another's lease runs out."""
        retry = self.timing.retry_period
        if self.leading(now):
            # Never past the deadline: the attempt that would save the leadership must start before it.
            return max(0.0, min(retry, self.renewed_at + self.timing.renew_deadline - now))  # type: ignore[operator]
        if self.record is None or not self.record.holder or self.record.holder == self.identity:
            return retry
        seen = now if self.observed_at is None else self.observed_at
        left = seen + self.record.duration - now
        return left if 0 < left < retry else retry

    def attempt_timeout(self, now: float) -> float:
        """How long one attempt may take: a leader's ends at its deadline (then it steps down)."""
        if self.leading(now):
            return self.renewed_at + self.timing.renew_deadline - now  # type: ignore[operator]
        return self.timing.renew_deadline
