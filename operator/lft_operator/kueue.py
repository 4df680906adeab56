"""Kueue's Workloads: where they are, the one patch the operator makes (spec.active), and the watch that keeps them
in memory. Only with the integration on (settings.kueue, the chart's kueue.enabled): main.py imports
kueue_handlers then, so an operator without Kueue never lists a kind that may not exist nor needs its RBAC.

How the operator finds a run's Workload (Kueue v0.17.0's batch/Job integration): Kueue creates one Workload per
Job, named after the Job plus a hash (jobframework.GetWorkloadNameForOwnerWithGVK: not derivable by the operator
without reimplementing the hash), controlled by the Job (ownerReference) and labelled kueue.x-k8s.io/job-uid with
the Job's uid. The watch indexes Workloads by that uid; IndexCache.jobs() hands each JobView its Workload.
"""

from __future__ import annotations

from typing import Any

from .kube import Kube, group_path

GROUP, VERSION, PLURAL = "kueue.x-k8s.io", "v1beta2", "workloads"


def workload_path(namespace: str, name: str) -> str:
    return group_path(GROUP, VERSION, namespace, PLURAL, name)


def active_patch(active: bool) -> dict[str, Any]:
    """Workload.spec.active: false evicts an admitted Workload (Evicted, reason Deactivated; Kueue then suspends its
    Job: SIGTERM, the trainer checkpoints) and keeps it from being admitted; true puts it back in its queue."""
    return {"spec": {"active": active}}


async def patch_workloads(kube: Kube, namespace: str, patches: list[tuple[str, dict[str, Any]]]) -> None:
    """The Decision's Workload patches (by Workload name), in order."""
    for name, patch in patches:
        await kube.merge_patch(workload_path(namespace, name), patch)
