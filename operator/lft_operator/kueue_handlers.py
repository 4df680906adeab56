"""kopf wiring of the Kueue integration (settings.kueue; main.py imports this module only then): Workloads are
indexed by their Job's uid (IndexCache.jobs() hands each JobView its Workload), and a Workload's change queues a
reconcile of the LoRAFineTune whose Job it belongs to. No logic of its own (status/queue.py decides).
"""

from __future__ import annotations

from typing import Any

import kopf

from . import kueue
from .builders import NAME_LABEL
from .handlers import JobOwnerIndex, WorkloadIndex, namespaced, raw_body
from .views import WorkloadView


@kopf.index(kueue.GROUP, kueue.VERSION, kueue.PLURAL)
async def lft_workloads(body: kopf.Body, **_: Any) -> dict[str, WorkloadView]:
    view = WorkloadView.from_workload(raw_body(body))
    return {view.job_uid: view} if view.job_uid else {}


@kopf.index("batch", "v1", "jobs", labels={NAME_LABEL: kopf.PRESENT})
async def lft_job_owners(namespace: str | None, labels: kopf.Labels, body: kopf.Body,
                         **_: Any) -> dict[str, tuple[str, str]]:
    """The LoRAFineTune of each of the operator's Jobs, by Job uid (a Workload names its Job by uid)."""
    uid = body.metadata.uid  # always set on a stored object; kopf types it optional
    return {uid: (namespaced(namespace), labels[NAME_LABEL])} if uid else {}


@kopf.on.event(kueue.GROUP, kueue.VERSION, kueue.PLURAL)
async def workload_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo,
                         lft_workloads: WorkloadIndex | None = None,  # as in handlers.lft_event
                         lft_job_owners: JobOwnerIndex | None = None, **_: Any) -> None:
    memo.cache.bind_workloads(lft_workloads)
    view = WorkloadView.from_workload(raw_body(body))
    if not view.job_uid or lft_job_owners is None:
        return
    for namespace, name in lft_job_owners.get(view.job_uid, []):
        memo.reconciler.on_child(namespace, name, body.metadata.uid, None if event.get("type") == "DELETED" else view)
