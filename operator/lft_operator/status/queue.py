"""Kueue (pure): what the status says while Kueue holds a run, and how suspend and resume reach Kueue.

A run is under Kueue when the operator's integration is on (settings.kueue) and its Job carries the
kueue.x-k8s.io/queue-name label: the operator sets it from spec.queueName (and creates the Job suspended), Kueue's
Job webhook from the namespace's default LocalQueue (it also suspends the Job on create). The operator reads the
label back from the Job, whoever set it, and the Job's Workload from the watch cache (kueue.py).

Kueue v0.17.0's batch/Job integration (pkg/controller/jobframework, jobs/job) unsuspends the Job once its Workload
is admitted, suspends it when the Workload is evicted (preemption, deactivation, a stopped queue...) or not
admitted, and unsuspends a Job that someone else suspended while its Workload stays admitted. Hence:
- the operator never patches the suspend of a Job under Kueue;
- spec.suspend goes through the Workload's spec.active: false evicts it (Evicted, reason Deactivated) and Kueue
  suspends the Job (SIGTERM: the trainer checkpoints); true again puts it back in its queue. The operator sets
  active true only on a Workload it deactivated itself (its Suspended condition, reason Suspending/Suspended):
  one that Kueue or an admin deactivated stays so, and a Job that Kueue suspended stays so;
- Workload conditions read (apis/kueue/v1beta2/workload_types.go): QuotaReserved (False: Kueue's reason, Pending
  or Inadmissible, and message, e.g. insufficient quota in a flavor), Admitted, Evicted (reason Preempted,
  Deactivated, PodsReadyTimeout, ClusterQueueStopped...; it stays True until quota is reserved again), Preempted
  (InClusterQueue, InCohortReclamation, InCohortFairSharing...), Finished.
"""

from __future__ import annotations

from dataclasses import dataclass

from lft_api.conditions import FAILED, PENDING, RUNNING, SUCCEEDED, SUSPENDED, Reason
from lft_api.resource import QueueStatus

from ..job_policy import suspend_patch
from ..kueue import active_patch
from ..views import JobView, WorkloadView
from .attempts import truncate
from .draft import Draft

# Workload condition types and Evicted reasons (Kueue v0.17.0, apis/kueue/v1beta2).
QUOTA_RESERVED, ADMITTED, EVICTED, PREEMPTED, FINISHED = "QuotaReserved", "Admitted", "Evicted", "Preempted", "Finished"
EVICTED_BY_PREEMPTION = "Preempted"  # WorkloadEvictedByPreemption
EVICTED_BY_DEACTIVATION = "Deactivated"  # WorkloadDeactivated: spec.active false
# status.queue.state
QUEUED_STATE, ADMITTED_STATE, PREEMPTED_STATE, DEACTIVATED_STATE, FINISHED_STATE = (
    "Queued", "Admitted", "Preempted", "Deactivated", "Finished")
# The Suspended condition reasons of the operator's own suspend (spec.suspend): the only deactivation it undoes.
OPERATOR_SUSPEND_REASONS = (Reason.SUSPENDING, Reason.SUSPENDED)


@dataclass(frozen=True)
class Hold:
    """Kueue holds the run: Queued (Pending), Preempted or Deactivated (Suspended), in Kueue's words."""

    state: str
    reason: str
    message: str


def under_kueue(d: Draft, job: JobView | None) -> bool:
    return d.obs.kueue and job is not None and job.queue_name is not None


def _kueue_says(wl: WorkloadView) -> str:
    """Why Kueue has not reserved quota (QuotaReserved False: its reason and message), or ""."""
    quota = wl.condition(QUOTA_RESERVED)
    if quota is None or quota.true or not quota.message:
        return ""
    return truncate(quota.message, 400) + (f" ({quota.reason})" if quota.reason else "")


def hold(job: JobView) -> Hold | None:
    """Whether Kueue holds the run and why; None once its Workload is admitted (Kueue starts the Job) or finished."""
    wl, queue = job.workload, job.queue_name
    if wl is None:
        if not job.suspended:
            return None
        return Hold(QUEUED_STATE, Reason.QUEUED, f"Queued in LocalQueue {queue}: waiting for Kueue to create the "
                                                 f"Workload of Job {job.name}.")
    if wl.is_true(FINISHED):
        return None
    evicted = wl.condition(EVICTED)
    evicted = evicted if evicted is not None and evicted.true else None
    says = _kueue_says(wl)
    if evicted is not None and evicted.reason == EVICTED_BY_PREEMPTION:
        preempted = wl.condition(PREEMPTED)
        why = f" ({preempted.reason})" if preempted is not None and preempted.true and preempted.reason else ""
        return Hold(PREEMPTED_STATE, Reason.PREEMPTED,
                    f"Preempted by Kueue{why}: {truncate(evicted.message, 300) or 'evicted'}. Requeued in LocalQueue "
                    f"{queue}: resumes from the newest checkpoint when Kueue admits it again"
                    + (f"; Kueue: {says}" if says else "") + ".")
    if not wl.active:
        detail = f" ({evicted.reason}: {truncate(evicted.message, 300)})" if evicted is not None else ""
        return Hold(DEACTIVATED_STATE, Reason.DEACTIVATED,
                    f"Kueue Workload {wl.name} is deactivated (spec.active false, not by the operator){detail}; "
                    "the run resumes from the newest checkpoint once it is active again.")
    if wl.is_true(ADMITTED) and evicted is None:
        return None
    if evicted is not None and evicted.reason == EVICTED_BY_DEACTIVATION:  # active again (e.g. the run resumed)
        why = "back in the queue after its deactivation" + (f"; {says}" if says and "deactivated" not in says else "")
    elif evicted is not None:
        why = f"evicted by Kueue ({evicted.reason}: {truncate(evicted.message, 300)}), requeued" + (
            f"; {says}" if says else "")
    elif wl.is_true(QUOTA_RESERVED):
        why = f"quota reserved in ClusterQueue {wl.cluster_queue or '?'}, waiting for its admission checks"
    else:
        why = says or "waiting for Kueue to admit it"
    return Hold(QUEUED_STATE, Reason.QUEUED, f"Queued in LocalQueue {queue}: {why}")


def note_queue(d: Draft, job: JobView | None, suspending: bool = False) -> Hold | None:
    """status.queue from the Job's Workload, and Kueue's hold on the run (None: not held, or not under Kueue).
    `suspending`: spec.suspend is true (a deactivated Workload is the operator's doing)."""
    if not under_kueue(d, job):
        return None
    assert job is not None and job.queue_name is not None
    held, wl = hold(job), job.workload
    if suspending and held is not None and held.state == DEACTIVATED_STATE and wl is not None:
        held = Hold(DEACTIVATED_STATE, Reason.SUSPENDED, f"Kueue Workload {wl.name} deactivated for spec.suspend.")
    state = held.state if held is not None else FINISHED_STATE if wl is not None and wl.is_true(FINISHED) else ADMITTED_STATE
    d.new.queue = QueueStatus(
        name=job.queue_name, state=state,  # type: ignore[arg-type]
        cluster_queue=wl.cluster_queue if wl is not None else None, workload=wl.name if wl is not None else None,
        message=held.message if held is not None else None, display=f"{state} ({job.queue_name})",
    )
    return held


def operator_suspended(d: Draft) -> bool:
    """The Suspended condition is the operator's own suspend (spec.suspend), not Kueue's."""
    cond = d.conds.get(SUSPENDED)
    return cond is not None and cond.status == "True" and cond.reason in OPERATOR_SUSPEND_REASONS


def request_suspend(d: Draft, job: JobView) -> None:
    """spec.suspend true: the Job's suspend, or under Kueue its Workload's spec.active false (Kueue would unsuspend
    the Job of an admitted Workload). A Workload not seen yet is deactivated on a later reconcile (its Job was
    created suspended: no trainer runs before that unless Kueue admits it first)."""
    if not under_kueue(d, job):
        if not job.suspended:
            d.job_patches.append(suspend_patch(True))
        return
    if job.workload is not None and job.workload.active:
        d.workload_patches.append((job.workload.name, active_patch(False)))


def resuming(d: Draft, job: JobView) -> bool:
    """spec.suspend false under Kueue after the operator's own suspend: the Workload set active again. True while
    the Workload is seen inactive (the patch is repeated, harmless): the status stays Suspended until Kueue has
    it back in its queue, then the run reads Resumed and Queued. Never undoes Kueue's or an admin's deactivation."""
    wl = job.workload
    if not under_kueue(d, job) or wl is None or wl.active or not operator_suspended(d):
        return False
    d.workload_patches.append((wl.name, active_patch(True)))
    d.phase("Suspended", f"Resuming: Kueue Workload {wl.name} is set active again; the run waits in LocalQueue "
                         f"{job.queue_name} and resumes from the newest checkpoint once admitted.")
    return True


def report(d: Draft, held: Hold, running: bool) -> None:
    """The status while Kueue holds the run: Pending/Queued, or Suspended/Preempted|Deactivated (Running while a
    trainer still saves its checkpoint). One Event per transition, not per Kueue message."""
    if held.state == QUEUED_STATE:
        old = d.conds.get(RUNNING)
        if old is None or old.reason != Reason.QUEUED:
            d.event("Normal", Reason.QUEUED, held.message)
        d.conds.set(RUNNING, False, Reason.QUEUED, held.message)
        d.phase(PENDING, held.message)
    else:
        old = d.conds.get(SUSPENDED)
        if old is None or old.status != "True" or old.reason != held.reason:
            d.event("Warning" if held.reason == Reason.PREEMPTED else "Normal", held.reason, held.message)
        d.conds.set(SUSPENDED, True, held.reason, held.message)
        d.conds.set(RUNNING, running, held.reason, "The trainer saves a checkpoint and stops." if running else "")
        d.phase("Running" if running else "Suspended",
                f"Stopping (the trainer saves a checkpoint): {held.message}" if running else held.message)
    d.conds.set(SUCCEEDED, False, Reason.IN_PROGRESS)
    d.conds.set(FAILED, False, Reason.IN_PROGRESS)
