"""decide_gang(Observation) -> Decision for a multi-node run (training.nodes > 1) (pure).

An attempt is one Job per node (multinode.py), all labelled with the attempt number. Gang rules, in order:
1. Succeeded and Failed are final (leftover Jobs of the run are deleted).
2. Suspend: every Job is deleted; Suspended once no pod is left.
3. The node-rank-0 pod exits 0 (or its Job completes) -> Succeeded, with its termination message.
4. Any pod of the attempt failed or was evicted, or any of its Jobs failed -> the attempt ends: every Job of
   it is deleted (the other ranks would wait in a collective until their timeout). Invalid input (exit 3) is
   final; otherwise it counts toward runPolicy.backoffLimit, once per attempt.
5. No Job of the current attempt and no pod of an earlier one left -> the next attempt's Jobs are created:
   every rank resumes from the newest complete checkpoint (no pod of the previous attempt still uploads).
6. A node's Job whose pod the Job controller cannot create (FailedCreate Events: quota, Pod Security, ...):
   Pending, PodCreationFailed, naming the node; after the pod-creation timeout (the single-pod path's
   setting), Failed, PodCreationTimeout, and every Job of the attempt is deleted (status/failures.py).
7. Otherwise Running (every node's trainer runs) or Pending with the reason of a node that does not run
   (unschedulable, image pull, ...), and status.readyNodes / status.nodes (and nodesDisplay, "1/2").
"""

from __future__ import annotations

from typing import Any

from lft_api import contract
from lft_api.conditions import ACCEPTED, FAILED, PENDING, RUNNING, SUCCEEDED, SUSPENDED, Reason
from lft_api.resource import Attempt

from ..views import JobView, PodView
from .attempts import _ending, attempt_phase, describe, truncate
from .decide import TERMINAL_PHASES, _not_accepted, _spec_changes, _succeeded
from .draft import Draft
from .failures import checkpoint_health, pod_creation_timed_out, pod_failure
from .model import Decision, Observation, PodCreationFailure


def current_attempt(obs: Observation) -> int:
    """The newest attempt: from the status, or from Jobs created before the status recorded them."""
    return max([obs.status.get("attempts") or 0, *(j.attempt or 0 for j in obs.jobs)])


def run_nodes(obs: Observation, attempt: int, jobs: list[JobView]) -> int:
    """The run's node count: fixed by its first attempt (status.nodes; the trainer's config, written once, holds
    it too), else the spec's. A count changed later is reported, not applied (it would add a rank the trainers
    do not know, or wait for one that never comes)."""
    recorded = obs.status.get("nodes")
    if attempt > 0 and isinstance(recorded, int) and recorded > 1:
        return recorded
    return obs.spec.training.nodes if obs.spec is not None else len(jobs)


def _live_jobs(obs: Observation) -> list[JobView]:
    return [j for j in obs.jobs if not j.deleting]


def decide_gang(obs: Observation) -> Decision:
    d = Draft(obs)
    attempt = current_attempt(obs)
    jobs = [j for j in _live_jobs(obs) if j.attempt == attempt]
    pods = [p for p in obs.pods if p.attempt == attempt]
    nodes = run_nodes(obs, attempt, jobs)
    d.new.nodes = nodes
    d.new.attempts = attempt
    d.new.ready_nodes = sum(1 for p in pods if attempt_phase(p) in ("Running", "Succeeded"))
    d.new.nodes_display = f"{d.new.ready_nodes}/{nodes}"
    obs.job = next((j for j in jobs if j.node_rank == 0), None)
    _spec_changes(d, "the run started and will not be applied: every attempt's Jobs are built from the spec the "
                     f"run started with ({nodes} nodes), as is the trainer's configuration")
    checkpoint_health(d)
    if d.old.phase in TERMINAL_PHASES:
        # A failed run's ranks still waiting in a collective are stopped; a succeeded run's Jobs stay (logs).
        return _with(d.done(), deletes=_names(_live_jobs(obs)) if d.old.phase == FAILED else [])
    if attempt == 0 and obs.problems:
        _not_accepted(d)
        return d.done()
    if not d.conds.true(ACCEPTED):
        d.event("Normal", Reason.ACCEPTED, f"Spec accepted; {nodes} training Jobs, one per node.")
    d.conds.set(ACCEPTED, True, Reason.ACCEPTED, f"Training Jobs {obs.job_name}-node-0..{nodes - 1}.")
    if obs.spec is not None and obs.spec.suspend:
        return _suspend(d, attempt, pods)
    if d.conds.true(SUSPENDED):
        d.event("Normal", Reason.RESUMED, "Resumed: a new attempt resumes from the newest checkpoint.")
        d.conds.set(SUSPENDED, False, Reason.RESUMED)
    elif d.conds.get(SUSPENDED) is None:
        d.conds.set(SUSPENDED, False, Reason.NOT_SUSPENDED)
    rank0 = next((p for p in pods if p.node_rank == 0 and p.exit_code == 0), None)
    if rank0 is not None or (obs.job is not None and obs.job.complete):
        _record(d, attempt, rank0, "Succeeded")
        return _succeeded(d, _Succeeded(rank0))
    ended = _attempt_failure(jobs, pods)
    if ended is not None:
        return _attempt_failed(d, attempt, ended)
    if len(jobs) < nodes:
        return _next_attempt(d, attempt, jobs)
    stuck = _uncreatable(d, jobs)
    if stuck is not None and stuck[2] is not None:
        return _creation_timed_out(d, attempt, stuck[0], stuck[2])
    _in_progress(d, attempt, nodes, pods, stuck)
    return d.done()


class _Succeeded:
    """What decide._succeeded reads of an attempt update: the record and the pod with the result."""

    def __init__(self, pod: PodView | None):
        self.succeeded = ({}, pod) if pod is not None else None


def _names(jobs: list[JobView]) -> list[str]:
    return sorted(j.name for j in jobs)


def _with(decision: Decision, deletes: list[str] | None = None, create: int | None = None) -> Decision:
    decision.job_deletes = deletes or []
    decision.create_attempt = create
    return decision


def _record(d: Draft, attempt: int, pod: PodView | None, phase: str, **fields: Any) -> dict[str, Any]:
    """The attempt's entry in status.attemptHistory (one entry per attempt, named after a pod of it)."""
    history = [a.to_wire() for a in d.new.attempt_history]
    rec = next((r for r in history if r.get("attempt") == attempt), None)
    if rec is None:
        rec = {"attempt": attempt, "pod": pod.name if pod else f"{d.obs.job_name}-node-0", "phase": "Pending",
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


def _ended_badly(pod: PodView) -> bool:
    """Failed, evicted, or deleted before it finished (then it exits preempted, or vanishes)."""
    return pod.terminated and attempt_phase(pod) != "Succeeded"


def _attempt_failure(jobs: list[JobView], pods: list[PodView]) -> dict[str, Any] | None:
    """The first failure that ends the attempt (a pod that failed or was evicted, or a failed Job), or None."""
    failed = sorted((p for p in pods if _ended_badly(p)), key=lambda p: (p.finished_at or "", p.name))
    if failed:
        pod = failed[0]
        return {"pod": pod.name, "node": pod.node_rank, **_ending(pod)}
    job = next((j for j in jobs if j.failed_reason), None)
    if job is not None:
        return {"pod": job.name, "node": job.node_rank, "reason": job.failed_reason,
                "message": truncate(job.failed_message or "")}
    return None


def _attempt_failed(d: Draft, attempt: int, ended: dict[str, Any]) -> Decision:
    spec = d.obs.spec
    backoff_limit = spec.run_policy.backoff_limit if spec is not None else 0
    deletes = _names(_live_jobs(d.obs))
    fields = {k: v for k, v in ended.items() if k in ("exitCode", "reason", "message", "finishTime")}
    text = f"node {ended.get('node')} (pod {ended['pod']}): {describe(fields)}"
    old = next((a for a in d.old.attempt_history if a.attempt == attempt), None)
    if old is None or old.phase != "Failed":
        _record(d, attempt, None, "Failed", counted=True, **fields)
        d.new.attempt_history[-1].pod = ended["pod"]
        d.new.failed_attempts = d.old.failed_attempts + 1
    if contract.outcome_for_exit_code(fields.get("exitCode")) == "invalid_input":
        return _with(d.final(FAILED, fields.get("reason") or Reason.INVALID_INPUT,
                             f"Invalid input, not retried: {text}"), deletes)
    if d.new.failed_attempts > backoff_limit:
        message = (f"{d.new.failed_attempts} failed attempts (runPolicy.backoffLimit {backoff_limit}); "
                   f"last: attempt {attempt}, {text}")
        return _with(d.final(FAILED, fields.get("reason") or Reason.BACKOFF_LIMIT_EXCEEDED, message), deletes)
    message = (f"Attempt {attempt} ended: {text}; every node restarts from the newest checkpoint "
               f"({d.new.failed_attempts}/{backoff_limit} failures).")
    if d.new.failed_attempts != d.old.failed_attempts:
        d.event("Warning", Reason.RETRYING, message)
    _pending(d, Reason.RETRYING, message)
    return _with(d.done(), deletes)


def _next_attempt(d: Draft, attempt: int, jobs: list[JobView]) -> Decision:
    """Create the missing Jobs of the attempt (after a partial creation), or of the next one once every pod
    of the previous attempt is gone."""
    started = jobs or any(a.attempt == attempt and a.phase == "Pending" for a in d.old.attempt_history)
    if attempt > 0 and started:
        _pending(d, Reason.JOB_CREATED, f"Creating the Jobs of attempt {attempt}.")
        return _with(d.done(), create=attempt)
    leftovers, older = d.obs.pods, d.obs.jobs  # no Job of this attempt is left: all of them are earlier ones
    if leftovers or older:
        names = ", ".join(sorted({p.name for p in leftovers} | {j.name for j in older}))
        last = next((a for a in d.new.attempt_history if a.attempt == attempt and a.phase == "Failed"), None)
        why = f"Attempt {attempt} ended ({describe(last.to_wire())}); w" if last is not None else "W"
        _pending(d, Reason.ATTEMPT_ENDING, f"{why}aiting for the pods of attempt {attempt} to stop: {truncate(names, 200)}")
        return _with(d.done(), deletes=_names([j for j in older if not j.deleting]))
    d.new.attempts = attempt + 1
    _record(d, attempt + 1, None, "Pending")
    if attempt == 0:
        d.event("Normal", Reason.JOB_CREATED, f"Creating {d.new.nodes} Jobs, one per node.")
    _pending(d, Reason.JOB_CREATED, f"Creating the Jobs of attempt {attempt + 1}.")
    return _with(d.done(), create=attempt + 1)


def _pending(d: Draft, reason: str, message: str) -> None:
    d.conds.set(RUNNING, False, reason, message)
    d.conds.set(SUCCEEDED, False, Reason.IN_PROGRESS)
    d.conds.set(FAILED, False, Reason.IN_PROGRESS)
    d.phase(PENDING, message)


def _suspend(d: Draft, attempt: int, pods: list[PodView]) -> Decision:
    live = [p for p in d.obs.pods if not p.terminated]
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
    if attempt and any(a.attempt == attempt and a.phase in ("Pending", "Running") for a in d.new.attempt_history):
        _record(d, attempt, None, "Stopped", reason=Reason.SUSPENDED, finishTime=d.obs.now)
    return _with(d.done(), deletes=_names(_live_jobs(d.obs)))


def _uncreatable(d: Draft, jobs: list[JobView]) -> tuple[JobView, PodCreationFailure, str | None] | None:
    """The first node (by rank) whose pod the Job controller cannot create: its Job, the failure, and the final
    message once the pod-creation timeout has passed (the single-pod path's rules, per node Job)."""
    history = [a.to_wire() for a in d.new.attempt_history]
    for job in sorted(jobs, key=lambda j: (j.node_rank or 0, j.name)):
        pods = [p for p in d.obs.pods if p.job_uid == job.uid]
        failure = pod_failure(d, history, job, pods, d.obs.node_pod_failures.get(job.uid))
        if failure is not None:
            return job, failure, pod_creation_timed_out(d, history, job, pods, failure)
    return None


def _creation_timed_out(d: Draft, attempt: int, job: JobView, timed_out: str) -> Decision:
    message = f"Node {job.node_rank} (Job {job.name}): {timed_out}"
    _record(d, attempt, None, "Failed", reason=Reason.POD_CREATION_TIMEOUT, message=truncate(message),
            finishTime=d.obs.now)
    decision = d.final(FAILED, Reason.POD_CREATION_TIMEOUT, message, event_reason=Reason.POD_CREATION_TIMEOUT)
    return _with(decision, deletes=_names(_live_jobs(d.obs)))


def _in_progress(d: Draft, attempt: int, nodes: int, pods: list[PodView],
                 stuck: tuple[JobView, PodCreationFailure, str | None] | None = None) -> None:
    ready = d.new.ready_nodes or 0
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
        why = (f"the Job controller cannot create the trainer pod of node {stuck[0].node_rank} "
               f"(Job {stuck[0].name}): {stuck[1].message}")
        old = d.conds.get(RUNNING)
        if old is None or old.reason != reason:
            d.event("Warning", reason, f"Attempt {attempt}: {why}")
    else:
        reason, why = _waiting(pods)
    _pending(d, reason, f"Attempt {attempt}: {ready}/{nodes} nodes running; {why}")


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
