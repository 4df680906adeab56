"""The reconcile of a multi-node run (training.nodes > 1): observe the attempts' Indexed Jobs and their pods,
decide (status/gang.py, pure), act (create the Service, its NetworkPolicy and the attempt's Job; patch the Job:
suspend, resume, stop; write the status). The Job controller stops the pods of a failed attempt; no Job is
deleted (each keeps its pods' logs until its ttlSecondsAfterFinished). The single-pod path (reconcile.py) is its
peer: both act through RunChildren (children.py).
"""

from __future__ import annotations

import logging
from typing import Any

from lft_api.resource import LoRAFineTuneSpec

from . import builders, metrics, multinode
from .builders import Owner
from .children import RetryLater, RunChildren
from .kube import ApiError, group_path
from .status import TERMINAL_PHASES, Observation, PodCreationFailure, classify_create_error
from .status.gang import current_attempt, decide_gang
from .validation import validate_resource
from .views import JobView, controller_uid

logger = logging.getLogger(__name__)


def requested(body: dict[str, Any], status: dict[str, Any], jobs: list[JobView]) -> bool:
    """Whether the multi-node path runs the resource. Fixed once the run started, whatever training.nodes says
    later (the other path would orphan the running Jobs or start a second attempt beside them; the change is
    reported as SpecChangeIgnored instead): by its Jobs (attempt labels or not), else by the trusted status
    (jobName: the single-pod Job was created; nodes > 1 with attempts: a multi-node run between attempts),
    else by the raw spec (an invalid spec too)."""
    uid = (body.get("metadata") or {}).get("uid")
    mine = [j for j in jobs if j.owner_uid == uid]
    if mine:
        return any(j.attempt is not None for j in mine)
    if status.get("jobName"):
        return False
    recorded = status.get("nodes")
    if status.get("attempts") and isinstance(recorded, int) and recorded > 1:
        return True
    training = (body.get("spec") or {}).get("training") or {}
    nodes = training.get("nodes", 1) if isinstance(training, dict) else 1
    return isinstance(nodes, int) and nodes > 1


async def reconcile_gang(r: RunChildren, body: dict[str, Any]) -> None:
    owner = Owner.from_body(body)
    trust = r.trusted(body, owner)  # trainer writes of operator fields reverted, another UID's removed
    status = trust.status
    spec, problems = validate_resource(body, status, r.settings)  # the admin policy included
    jobs = [j for j in r.cache.jobs(owner.namespace, owner.name) if j.owner_uid == owner.uid]
    uids = {j.uid for j in jobs}
    pods = [p for p in r.cache.pods(owner.namespace, owner.name) if p.job_uid in uids or p.attempt is not None]
    obs = Observation(name=owner.name, generation=body["metadata"].get("generation", 1), status=status, spec=spec,
                      problems=problems, job_name=builders.child_name(owner.name), job=None, pods=pods,
                      now=r.clock(), jobs=jobs, uid=owner.uid, stored=body.get("status") or {},
                      stale=trust.stale, foreign=trust.foreign, kueue=r.settings.kueue,
                      pod_creation_timeout=r.settings.pod_creation_timeout_seconds)
    if spec is not None and not problems and not status.get("attempts") and not jobs:
        obs.problems = r.output_problems(body, spec)
    if status.get("phase") not in TERMINAL_PHASES:
        obs.node_pod_failures = await _node_pod_failures(r, owner, obs)
    decision = decide_gang(obs)
    if decision.patch_attempt is not None:
        for patch in decision.job_patches:  # suspend, resume, stop: the attempt's Job
            await _patch_job(r, owner, decision.patch_attempt, patch)
    decision.job_patches = []
    if decision.create_attempt is not None and spec is not None and status.get("phase") not in TERMINAL_PHASES:
        try:
            await _create_attempt(r, owner, spec, decision.create_attempt, decision.status.get("nodes"))
        except ApiError as e:
            error = classify_create_error(e.status, e.message, e.reason)
            if error is None:
                raise
            logger.warning("creating the Jobs of %s/%s refused: %s", owner.namespace, owner.name, e)
            decision.status["message"] = decision.patch["message"] = f"{error.message} (retrying)"
            r.queue.add_after((owner.namespace, owner.name), 10.0)
    await r.apply(body, decision)


async def _node_pod_failures(r: RunChildren, owner: Owner, obs: Observation) -> dict[str, PodCreationFailure]:
    """By Job uid: the FailedCreate Events of the current attempt's Job while pods of it are missing (as the
    single-pod path looks them up, RunChildren.pod_failure)."""
    attempt, found = current_attempt(obs), {}
    for job in obs.jobs:
        if job.attempt == attempt and not job.deleting:
            failure = await r.pod_failure(owner, job, [p for p in obs.pods if p.job_uid == job.uid], obs.now)
            if failure is not None:
                found[job.uid] = failure
    return found


async def _patch_job(r: RunChildren, owner: Owner, attempt: int, patch: dict[str, Any]) -> None:
    await r.kube.merge_patch(group_path("batch", "v1", owner.namespace, "jobs", multinode.job_name(owner.name, attempt)),
                             patch)
    logger.info("patched Job %s/%s: %s", owner.namespace, multinode.job_name(owner.name, attempt), patch["spec"])


async def _create_attempt(r: RunChildren, owner: Owner, spec: LoRAFineTuneSpec, attempt: int, nodes: int | None) -> None:
    """The Service (which keeps the spec the run started with: multinode.run_spec) and the NetworkPolicy that keeps
    its rendezvous to the run's own pods, the ServiceAccount, the companions, then the attempt's Indexed Job of
    the run's `nodes` pods (idempotent). The NetworkPolicy comes before any Job: no pod of the run listens
    unprotected."""
    service, _ = await r.create_or_adopt(multinode.service(owner, spec))
    await r.create_or_adopt(multinode.network_policy(owner))  # a run started by an earlier version gets it here too
    spec = multinode.run_spec(service, spec, nodes)
    if spec.pod_template.service_account_name is None:
        await r.create_or_adopt(builders.service_account(owner))
    await r.ensure_companions(owner, spec, with_service_account=False)
    service_ip = (service.get("spec") or {}).get("clusterIP")
    if not service_ip or service_ip == "None":
        # A Service left from an earlier operator version (headless): replaced by the garbage collector only
        # with its owner, so say so rather than start ranks that cannot find their master.
        raise RetryLater(f"Service {service['metadata']['name']} has no cluster IP: delete it to have it recreated")
    body, created = await r.create_or_adopt(multinode.job(owner, spec, r.settings, attempt=attempt, master_addr=service_ip))
    view = JobView.from_job(body)
    if controller_uid(body["metadata"]) != owner.uid or view.attempt != attempt:
        raise RetryLater(f"Job {view.name} of an earlier namesake is being deleted")
    if created:
        metrics.JOBS_CREATED.inc()
        logger.info("created Job %s/%s (attempt %d)", owner.namespace, view.name, attempt)
