"""decide_gang(Observation) -> Decision for a multi-node run (training.nodes > 1) (pure).

An attempt is one Indexed Job (multinode.py) labelled with the attempt number; its pods' completion indexes are
the node ranks. Gang rules, in order:
1. Succeeded and Failed are final (a Job the operator failed the run for, still running, is stopped).
2. The index-0 pod exits 0 (or the Job completes) -> Succeeded, with its termination message.
3. A pod of the attempt failed or was evicted, or the Job failed -> the attempt ends. backoffLimit 0: the Job
   controller fails the Job and stops the other ranks (they would wait in a collective until their timeout).
   Invalid input (exit 3; the Job's podFailurePolicy, reason PodFailurePolicy) is final; otherwise it counts
   toward runPolicy.backoffLimit once per attempt (a disrupted pod's attempt, eviction or preemption, is not
   counted), and once the Job has failed and none of its pods runs, the next attempt's Job is created: every
   rank resumes from the newest complete checkpoint (no pod of the previous attempt still uploads).
4. No Job of the current attempt (the first, or a creation that did not finish) -> the attempt's Job is created.
5. Suspend: the Job's spec.suspend (the Job controller stops every pod: a checkpoint each; suspended pods count
   as no failure); Suspended once no pod runs. Resume: spec.suspend false again, every rank starts anew. Under
   Kueue (status/queue.py) through the attempt's Workload (one for the Indexed Job: every node admitted or none),
   and Kueue's hold reads Queued (Pending) or Preempted/Deactivated (Suspended).
6. The Job's pods cannot all be created (FailedCreate Events: quota, Pod Security, ...): Pending,
   PodCreationFailed; after the pod-creation timeout (the single-pod path's setting), Failed, PodCreationTimeout,
   and the Job is stopped (status/failures.py).
7. Otherwise Running (every node's trainer runs) or Pending with the reason of a node that does not run
   (unschedulable, image pull, ...), and status.readyNodes / status.nodes (and nodesDisplay, "1/2").
"""

from __future__ import annotations

from typing import Any

from lft_api import contract
from lft_api.conditions import ACCEPTED, FAILED, PENDING, RUNNING, SUCCEEDED, SUSPENDED, TERMINAL_PHASES, Reason
from lft_api.resource import Attempt

from ..builders import stop_patch, suspend_patch
from ..views import JobView, PodView
from . import queue
from .attempts import attempt_phase, describe, pod_ending, truncate
from .draft import Draft
from .failures import checkpoint_health, pod_creation_timed_out, pod_failure
from .model import Decision, Observation, PodCreationFailure
from .rules import not_accepted, spec_changes, succeeded


def current_attempt(obs: Observation) -> int:
    """The newest attempt: from the status, or from a Job created before the status recorded it."""
    return max([obs.status.get("attempts") or 0, *(j.attempt or 0 for j in obs.jobs)])


def run_nodes(obs: Observation, attempt: int, job: JobView | None) -> int:
    """The run's node count: fixed by its first attempt (status.nodes; the trainer's config, written once, holds
    it too), else the spec's. A count changed later is reported, not applied (it would add a rank the trainers
    do not know, or wait for one that never comes)."""
    recorded = obs.status.get("nodes")
    if attempt > 0 and isinstance(recorded, int) and recorded > 1:
        return recorded
    if obs.spec is not None:
        return obs.spec.training.nodes
    return job.nodes if job is not None else 1


def attempt_job(obs: Observation, attempt: int) -> JobView | None:
    return next((j for j in obs.jobs if j.attempt == attempt and not j.deleting), None)


def decide_gang(obs: Observation) -> Decision:
    d = Draft(obs)
    attempt = current_attempt(obs)
    job = attempt_job(obs, attempt)
    pods = [p for p in obs.pods if p.attempt == attempt]
    nodes = run_nodes(obs, attempt, job)
    d.new.nodes = nodes
    d.new.attempts = attempt
    d.new.ready_nodes = sum(1 for p in pods if attempt_phase(p) in ("Running", "Succeeded") and not p.node_lost)
    d.new.nodes_display = f"{d.new.ready_nodes}/{nodes}"
    obs.job = job
    spec_changes(d, "the run started and will not be applied: every attempt's Job is built from the spec the "
                     f"run started with ({nodes} nodes), as is the trainer's configuration")
    checkpoint_health(d)
    if d.old.phase in TERMINAL_PHASES:
        # A run the operator failed (PodCreationTimeout) with its Job still on: the Job is stopped.
        failed = d.conds.get(FAILED)
        ours = d.old.phase == FAILED and failed is not None and failed.reason == Reason.POD_CREATION_TIMEOUT
        return _with(d, stop=ours and job is not None and not job.complete and job.failed_reason is None)
    if attempt == 0 and obs.problems:
        not_accepted(d)
        return d.done()
    if not d.conds.true(ACCEPTED):
        d.event("Normal", Reason.ACCEPTED, f"Spec accepted; one Indexed Job of {nodes} pods per attempt.")
    d.conds.set(ACCEPTED, True, Reason.ACCEPTED, f"Training Jobs {obs.job_name}-a<attempt>, {nodes} pods each.")
    rank0 = next((p for p in pods if p.node_rank == 0 and p.exit_code == 0), None)
    if rank0 is not None or (job is not None and job.complete):
        _record(d, attempt, rank0, "Succeeded")
        return succeeded(d, rank0)
    ended = _attempt_failure(job, pods)
    if ended is not None:
        return _attempt_failed(d, attempt, job, pods, ended)
    if job is None:
        return _next_attempt(d, attempt)
    if obs.spec is not None and obs.spec.suspend:
        return _suspend(d, attempt, job)
    if queue.resuming(d, job):  # under Kueue: the Workload set active again, the status stays Suspended till then
        return _with(d)
    # Only the operator's suspend (not Kueue's) is undone; under Kueue through the Workload (above).
    resume = job.suspended and d.conds.true(SUSPENDED) and not queue.under_kueue(d, job)
    held = queue.note_queue(d, job)  # one Workload for the attempt's Indexed Job: all nodes admitted, or none
    if held is not None and held.state != queue.QUEUED_STATE:
        queue.report(d, held, any(p.running for p in pods))
        _record(d, attempt, None, "Pending")
        return _with(d)
    if d.conds.true(SUSPENDED):
        d.event("Normal", Reason.RESUMED, "Resumed: every node resumes from the newest checkpoint.")
        d.conds.set(SUSPENDED, False, Reason.RESUMED)
    elif d.conds.get(SUSPENDED) is None:
        d.conds.set(SUSPENDED, False, Reason.NOT_SUSPENDED)
    if resume:
        d.job_patches.append(suspend_patch(False))
    if held is not None and not d.new.ready_nodes:
        queue.report(d, held, False)
        return _with(d)
    stuck = _uncreatable(d, job)
    if stuck is not None and stuck[1] is not None:
        return _creation_timed_out(d, attempt, job, stuck[1])
    _in_progress(d, attempt, nodes, pods, job, stuck[0] if stuck is not None else None)
    return _with(d)


def _with(d: Draft, create: int | None = None, stop: bool = False) -> Decision:
    if stop:
        d.job_patches.append(stop_patch())
    decision = d.done()
    decision.patch_attempt = d.obs.job.attempt if d.obs.job is not None else None
    decision.create_attempt = create
    return decision


def _record(d: Draft, attempt: int, pod: PodView | None, phase: str, **fields: Any) -> dict[str, Any]:
    """The attempt's entry in status.attemptHistory (one entry per attempt, named after a pod of it)."""
    history = [a.to_wire() for a in d.new.attempt_history]
    rec = next((r for r in history if r.get("attempt") == attempt), None)
    if rec is None:
        rec = {"attempt": attempt, "pod": pod.name if pod else f"{d.obs.job_name}-a{attempt}-0", "phase": "Pending",
               "startTime": d.obs.now}
        history.append(rec)
    if rec["phase"] not in ("Succeeded", "Failed", "Stopped"):
        if pod is not None:
            rec["pod"] = pod.name
        rec.update(phase=phase, **fields)
    d.new.attempt_history = [Attempt.model_validate(r) for r in history[-10:]]
    if not d.new.start_time:
        d.new.start_time = d.obs.now
    return rec


def _attempt_failure(job: JobView | None, pods: list[PodView]) -> dict[str, Any] | None:
    """The first failure that ends the attempt (a pod that failed or was evicted, or the failed Job), or None.
    A pod deleted before it ended (suspend: not counted by the Job controller) ends nothing, unless the Job
    failed (a pod deleted by hand counts there)."""
    job_failed = job is not None and job.failed_reason is not None
    failed = sorted((p for p in pods if p.terminated and attempt_phase(p) != "Succeeded" and (job_failed or not p.deleted)),
                    key=lambda p: (p.deleted, p.finished_at or "", p.name))
    if failed:
        pod = failed[0]
        return {"pod": pod.name, "node": pod.node_rank, "machine": pod.node_name, "disrupted": bool(pod.disrupted),
                **pod_ending(pod)}
    if job is not None and job_failed:
        return {"pod": job.name, "node": None, "reason": job.failed_reason,
                "message": truncate(job.failed_message or "")}
    return None


def _attempt_failed(d: Draft, attempt: int, job: JobView | None, pods: list[PodView], ended: dict[str, Any]) -> Decision:
    spec = d.obs.spec
    backoff_limit = spec.run_policy.backoff_limit if spec is not None else 0
    fields = {k: v for k, v in ended.items() if k in ("exitCode", "reason", "message", "finishTime")}
    machine = f" on {ended['machine']}" if ended.get("machine") else ""
    where = f"node {ended['node']} (pod {ended['pod']}{machine})" if ended.get("node") is not None else f"Job {ended['pod']}"
    text = f"{where}: {describe(fields)}"
    counted = not ended.get("disrupted")
    old = next((a for a in d.old.attempt_history if a.attempt == attempt), None)
    if old is None or old.phase != "Failed":
        _record(d, attempt, None, "Failed", counted=counted, **fields)
        d.new.attempt_history[-1].pod = ended["pod"]
        d.new.failed_attempts = d.old.failed_attempts + (1 if counted else 0)
    if contract.outcome_for_exit_code(fields.get("exitCode")) == "invalid_input":
        # The Job's podFailurePolicy (FailJob) fails it: nothing to stop.
        d.final(FAILED, fields.get("reason") or Reason.INVALID_INPUT, f"Invalid input, not retried: {text}")
        return _with(d)
    if d.new.failed_attempts > backoff_limit:
        message = (f"{d.new.failed_attempts} failed attempts (runPolicy.backoffLimit {backoff_limit}); "
                   f"last: attempt {attempt}, {text}")
        d.final(FAILED, fields.get("reason") or Reason.BACKOFF_LIMIT_EXCEEDED, message)
        return _with(d)  # backoffLimit 0: the Job controller fails the Job and stops the other ranks
    counting = f"{d.new.failed_attempts}/{backoff_limit} failures" + ("" if counted else "; a disruption, not counted")
    message = f"Attempt {attempt} ended: {text}; every node restarts from the newest checkpoint ({counting})."
    if old is None or old.phase != "Failed":
        d.event("Warning", Reason.RETRYING, message)
    live = sorted(p.name for p in pods if not p.terminated)
    if (job is not None and job.failed_reason is None) or live:
        why = f"{message} Waiting for the Job controller to stop the pods of attempt {attempt}"
        why = f"{why}: {truncate(', '.join(live), 200)}" if live else f"{why}."
        lost = _lost(pods)
        if lost:  # a pod on a machine that stopped reporting stops only when the machine is back, or is evicted
            why = f"{why} {_unreachable(d, attempt, lost)}"
        _pending(d, Reason.ATTEMPT_ENDING, why)
        return _with(d)
    return _start(d, attempt + 1)


def _next_attempt(d: Draft, attempt: int) -> Decision:
    """No Job of the current attempt: create it (the first, or one whose creation did not finish), or the next
    one (the current one's Job was deleted) once no pod of the run runs."""
    if attempt > 0 and any(a.attempt == attempt and a.phase == "Pending" for a in d.old.attempt_history):
        _pending(d, Reason.JOB_CREATED, f"Creating the Job of attempt {attempt}.")
        return _with(d, create=attempt)
    live = sorted(p.name for p in d.obs.pods if not p.terminated)
    if live:
        _pending(d, Reason.ATTEMPT_ENDING, f"Waiting for the pods of attempt {attempt} to stop: {truncate(', '.join(live), 200)}")
        return _with(d)
    if attempt == 0:
        d.event("Normal", Reason.JOB_CREATED, f"Creating the Indexed Job of attempt 1 ({d.new.nodes} pods).")
    return _start(d, attempt + 1)


def _start(d: Draft, attempt: int) -> Decision:
    d.new.attempts = attempt
    _record(d, attempt, None, "Pending")
    _pending(d, Reason.JOB_CREATED, f"Creating the Job of attempt {attempt}.")
    return _with(d, create=attempt)


def _pending(d: Draft, reason: str, message: str) -> None:
    d.conds.set(RUNNING, False, reason, message)
    d.conds.set(SUCCEEDED, False, Reason.IN_PROGRESS)
    d.conds.set(FAILED, False, Reason.IN_PROGRESS)
    d.phase(PENDING, message)


def _suspend(d: Draft, attempt: int, job: JobView) -> Decision:
    live = [p for p in d.obs.pods if not p.terminated]
    queue.request_suspend(d, job)  # the Job's suspend, or under Kueue its Workload's spec.active
    queue.note_queue(d, job, suspending=True)
    if not d.conds.true(SUSPENDED):
        d.event("Normal", Reason.SUSPENDED, "Suspend requested: every node saves a checkpoint and stops.")
    d.conds.set(SUCCEEDED, False, Reason.IN_PROGRESS)
    d.conds.set(FAILED, False, Reason.IN_PROGRESS)
    if live:
        d.conds.set(SUSPENDED, True, Reason.SUSPENDING, "Waiting for the trainers to save a checkpoint and exit.")
        d.conds.set(RUNNING, False, Reason.SUSPENDING)
        d.phase("Running" if any(p.running for p in live) else PENDING, "Suspending: the trainers save a checkpoint.")
    else:
        d.conds.set(SUSPENDED, True, Reason.SUSPENDED, "No trainer pod runs; set spec.suspend to false to resume.")
        d.conds.set(RUNNING, False, Reason.SUSPENDED)
        d.phase("Suspended", "Suspended; set spec.suspend to false to resume from the newest checkpoint.")
    if attempt:
        _record(d, attempt, None, "Pending")
    return _with(d)


def _uncreatable(d: Draft, job: JobView) -> tuple[PodCreationFailure, str | None] | None:
    """Why the Job controller cannot create the attempt's pods, and the final message once the pod-creation
    timeout has passed (the single-pod path's rules)."""
    history = [a.to_wire() for a in d.new.attempt_history]
    pods = [p for p in d.obs.pods if p.job_uid == job.uid]
    failure = pod_failure(d, history, job, pods, d.obs.node_pod_failures.get(job.uid))
    if failure is None:
        return None
    return failure, pod_creation_timed_out(d, history, job, pods, failure)


def _creation_timed_out(d: Draft, attempt: int, job: JobView, timed_out: str) -> Decision:
    message = f"Job {job.name}: {timed_out}"
    _record(d, attempt, None, "Failed", reason=Reason.POD_CREATION_TIMEOUT, message=truncate(message),
            finishTime=d.obs.now)
    d.final(FAILED, Reason.POD_CREATION_TIMEOUT, message, event_reason=Reason.POD_CREATION_TIMEOUT)
    return _with(d, stop=True)


def _in_progress(d: Draft, attempt: int, nodes: int, pods: list[PodView], job: JobView,
                 stuck: PodCreationFailure | None = None) -> None:
    ready = d.new.ready_nodes or 0
    lost = _lost(pods)
    if lost:
        _pending(d, Reason.NODE_UNREACHABLE,
                 f"Attempt {attempt}: {ready}/{nodes} nodes running; {_unreachable(d, attempt, lost)}")
        return
    if ready == nodes:
        message = f"Attempt {attempt} running on {nodes}/{nodes} nodes."
        if not d.conds.true(RUNNING):
            d.event("Normal", Reason.STARTED, message)
        _record(d, attempt, next((p for p in pods if p.node_rank == 0), None), "Running")
        d.conds.set(RUNNING, True, Reason.TRAINER_RUNNING, message)
        d.conds.set(SUCCEEDED, False, Reason.IN_PROGRESS)
        d.conds.set(FAILED, False, Reason.IN_PROGRESS)
        d.phase("Running", message)
        return
    if stuck is not None:
        reason = Reason.POD_CREATION_FAILED
        why = f"the Job controller cannot create the trainer pods (Job {job.name}): {stuck.message}"
        old = d.conds.get(RUNNING)
        if old is None or old.reason != reason:
            d.event("Warning", reason, f"Attempt {attempt}: {why}")
    elif job.suspended:
        reason, why = Reason.POD_PENDING, ("the Job is suspended by another controller (e.g. Kueue, until it admits "
                                           "the Job).")
    else:
        reason, why = _waiting(pods)
    _pending(d, reason, f"Attempt {attempt}: {ready}/{nodes} nodes running; {why}")


def _lost(pods: list[PodView]) -> list[PodView]:
    return sorted((p for p in pods if p.node_lost), key=lambda p: (p.node_rank or 0, p.name))


def _unreachable(d: Draft, attempt: int, lost: list[PodView]) -> str:
    """A rank's machine stopped reporting (stopped, crashed, cut off): its pod cannot fail or finish until the
    machine comes back or the pod is evicted from it. The sentence for the status; a Warning Event once."""
    which = ", ".join(f"node {p.node_rank} (pod {p.name}) on {p.node_name or 'its node'}" for p in lost)
    since = min(p.not_ready_since or d.obs.now for p in lost)
    message = (f"The machine of {which} stopped reporting (not ready since {since}): the attempt ends when the "
               "machine comes back or Kubernetes evicts its pod; then every node resumes from the newest checkpoint.")
    old = d.conds.get(RUNNING)
    if old is None or not old.message or "stopped reporting" not in old.message:
        d.event("Warning", Reason.NODE_UNREACHABLE, f"Attempt {attempt}: {message}")
    return message


def _waiting(pods: list[PodView]) -> tuple[str, str]:
    """Why a node does not run yet: the first unschedulable pod, else a waiting container, else pending."""
    for pod in sorted(pods, key=lambda p: (p.node_rank or 0, p.name)):
        if pod.unschedulable and not pod.terminated:
            return Reason.UNSCHEDULABLE, (f"trainer pod {pod.name} (node {pod.node_rank}) cannot be scheduled: "
                                          f"{truncate(pod.unschedulable, 300)}")
    for pod in sorted(pods, key=lambda p: (p.node_rank or 0, p.name)):
        if pod.waiting_reason and not pod.terminated:
            detail = f": {truncate(pod.waiting_message, 200)}" if pod.waiting_message else ""
            return pod.waiting_reason, f"trainer pod {pod.name} waiting ({pod.waiting_reason}){detail}"
    return Reason.POD_PENDING, "waiting for the pods to be created and scheduled."
