"""High availability: leader election on a coordination.k8s.io/v1 Lease (the decisions are in lease.py).

Any number of replicas run; all of them watch and keep their caches warm, exactly one reconciles.
- Becoming leader: the work queue opens and every known resource is queued (a full resync), so the
  new leader picks up whatever the old one left half done. Creations are idempotent (deterministic
  names, 409 = exists) and status writes are guarded by uid and resourceVersion, so a stale view
  makes no duplicate Job; Events are posted only after a status write succeeded, so a transition
  the old leader already wrote posts no second Event.
- Losing the lease (another holder, or no successful renewal within the renew deadline): the work
  queue closes, in-flight reconciles and Event posts are cancelled, and every write of the
  reconciler's client is refused from that instant on (kube.NotLeader), even before this loop runs.
- Shutting down (SIGTERM, a rolling update): the leader stops reconciling, then releases the lease,
  so a standby takes over within one retry period instead of one lease duration.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from . import metrics
from .kube import ApiError, Kube, group_path
from .lease import Action, LeaseRecord, LeaseState, Timing, micro_time
from .settings import Settings

logger = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def identity(env: Mapping[str, str] | None = None) -> str:
    """The pod's name (downward API: POD_NAME) and a random suffix: a restarted container is a new candidate."""
    environ = os.environ if env is None else env
    pod = environ.get("POD_NAME") or environ.get("HOSTNAME") or "lft-operator"
    return f"{pod}_{uuid.uuid4().hex[:8]}"


def lease_namespace(config: Settings, env: Mapping[str, str] | None = None) -> str:
    """Where the Lease lives: the setting, else the operator's own namespace."""
    environ = os.environ if env is None else env
    if config.leader_election_namespace:
        return config.leader_election_namespace
    if environ.get("OPERATOR_NAMESPACE"):
        return environ["OPERATOR_NAMESPACE"]
    if SERVICE_ACCOUNT_NAMESPACE.exists():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    return "default"


def timing(config: Settings) -> Timing:
    return Timing(
        lease_duration=config.leader_election_lease_duration_seconds,
        renew_deadline=config.leader_election_renew_deadline_seconds,
        retry_period=config.leader_election_retry_period_seconds,
    )


Callback = Callable[[], Awaitable[None]]


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        state: LeaseState,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.kube = kube  # its own client: renewals never wait behind the reconciler's requests
        self.namespace, self.name = namespace, name
        self.state = state
        self.clock = clock
        self.leading = False  # as last settled: the callbacks ran for it
        self._task: asyncio.Task[None] | None = None
        self._started: Callback | None = None
        self._stopped: Callback | None = None

    @property
    def path(self) -> str:
        return group_path("coordination.k8s.io", "v1", self.namespace, "leases", self.name)

    def is_leader(self) -> bool:
        """The write gate of the reconciler's client: false from the renew deadline on, whatever the loop does."""
        return self.leading and self.state.leading(self.clock())

    def start(self, on_started: Callback, on_stopped: Callback) -> None:
        self._started, self._stopped = on_started, on_stopped
        self._task = asyncio.get_running_loop().create_task(self._run(), name="leader election")
        logger.info("leader election: candidate %s for Lease %s/%s", self.state.identity, self.namespace, self.name)

    async def _run(self) -> None:
        while True:
            now = self.clock()
            try:
                await asyncio.wait_for(self._attempt(), timeout=self.state.attempt_timeout(now))
            except (TimeoutError, ApiError, aiohttp.ClientError, OSError) as e:
                # A lost race (409) is routine for a standby; anything else (403: no Role for Leases, 404: no
                # such namespace) would keep it from ever leading, so it is said out loud.
                routine = not self.leading and (not isinstance(e, ApiError) or e.status == 409)
                level = logging.DEBUG if routine else logging.WARNING
                logger.log(level, "leader election: Lease %s/%s not written: %s", self.namespace, self.name, e)
            except Exception:  # noqa: BLE001 - the loop must outlive any surprise (a malformed Lease)
                logger.exception("leader election: attempt failed")
            await self._settle()
            await asyncio.sleep(self.state.delay(self.clock()))

    async def _attempt(self) -> None:
        sent = self.clock()
        body = await self.kube.get(self.path)
        self.state.observe(LeaseRecord.from_lease(body) if body is not None else None, self.clock())
        action = self.state.action(self.clock())
        if action is Action.WAIT:
            return
        record = self.state.desired(micro_time())
        if action is Action.CREATE:
            await self.kube.create(self.path.rsplit("/", 1)[0], self._manifest(record))
        else:
            # PUT with the read resourceVersion: of two candidates writing at once, one gets 409.
            await self.kube.replace(self.path, {**body, "spec": record.spec()})
        self.state.written(record, sent)

    def _manifest(self, record: LeaseRecord) -> dict[str, Any]:
        meta = {"name": self.name, "namespace": self.namespace}
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": record.spec()}

    async def _settle(self) -> None:
        """Run the callbacks when leadership changed."""
        leading = self.state.leading(self.clock())
        if leading == self.leading:
            return
        self.leading = leading
        metrics.LEADER.set(1 if leading else 0)
        if leading:
            record = self.state.record
            logger.info("leader election: %s leads (Lease %s/%s, transitions %s)", self.state.identity,
                        self.namespace, self.name, record.transitions if record else 0)
            await self._started()  # type: ignore[misc]
        else:
            self.state.step_down()
            logger.warning("leader election: %s lost the Lease %s/%s; reconciling stopped",
                           self.state.identity, self.namespace, self.name)
            await self._stopped()  # type: ignore[misc]

    async def stop(self) -> None:
        """Shutdown: stop the loop; a leader stops reconciling first, then releases the lease."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if not self.leading:
            return
        self.leading = False
        self.state.step_down()
        metrics.LEADER.set(0)
        await self._stopped()  # type: ignore[misc]
        try:
            body = await self.kube.get(self.path)
            current = LeaseRecord.from_lease(body) if body is not None else None
            self.state.observe(current, self.clock())
            released = self.state.released(micro_time())
            if body is not None and released is not None:
                await self.kube.replace(self.path, {**body, "spec": released.spec()})
                logger.info("leader election: released the Lease %s/%s", self.namespace, self.name)
        except (TimeoutError, ApiError, aiohttp.ClientError, OSError) as e:
            logger.warning("leader election: could not release the Lease (it expires by itself): %s", e)


def elector(config: Settings, kube: Kube) -> LeaderElector:
    state = LeaseState(identity(), timing(config))
    return LeaderElector(kube, lease_namespace(config), config.leader_election_lease_name, state)
