"""decide(Observation) -> Decision: the rules, in order (see the package's docstring) (pure)."""

from __future__ import annotations

import json
from typing import Any

from lft_api.conditions import (
    ACCEPTED,
    FAILED,
    PENDING,
    RUNNING,
    SPEC_CHANGE_IGNORED,
    SUCCEEDED,
    SUSPENDED,
    TERMINAL_PHASES,
    Reason,
)
from lft_api.contract import Progress, TerminationMessage
from lft_api.resource import Attempt, LoRAFineTuneSpec

from ..builders import POD_FAILURE_POLICY_REASON, applied_spec, run_policy_patch, stop_patch, suspend_patch
from ..views import JobView
from .attempts import AttemptUpdate, attempt_no, describe, last_failed, outcome, truncate, update_attempts
from .draft import Draft
from .failures import checkpoint_health, pod_creation_timed_out, pod_failure
from .model import Decision, Event, Observation


def decide(obs: Observation) -> Decision:
    d = Draft(obs)
    job = obs.job
    upd = _attempts(d)
    _spec_changes(d)
    checkpoint_health(d)
    if d.old.phase in TERMINAL_PHASES:
        return d.done()

    # Not accepted yet: nothing exists.
    if job is None and not obs.job_lost:
        if obs.problems:
            _not_accepted(d)
        elif obs.create_error is not None:
            return _job_refused(d)
        else:
            d.phase(PENDING, "Creating the training Job.")
        return d.done()

    if not d.conds.true(ACCEPTED):
        d.event("Normal", Reason.ACCEPTED, f"Spec accepted; training Job {obs.job_name}.")
    if job is not None and not d.old.job_name:
        # From the status, not from "created just now": a reconcile that created the Job and failed
        # before writing the status is retried, and the retry finds the Job already there.
        d.event("Normal", Reason.JOB_CREATED, f"Created Job {job.name}.")
    d.conds.set(ACCEPTED, True, Reason.ACCEPTED, f"Training Job {obs.job_name} created.")
    for rec in upd.started:
        d.event("Normal", Reason.STARTED, f"Attempt {attempt_no(upd, rec)} started (pod {rec['pod']}).")

    final = _final_state(d, upd)
    if final is not None:
        return final
    assert job is not None  # _final_state handles a missing Job
    _in_progress(d, upd, job)
    return d.done()


def _attempts(d: Draft) -> AttemptUpdate:
    """Attempts are tracked in every phase (pods may still end after the run is final)."""
    old, obs = d.old, d.obs
    history = [a.to_wire() for a in old.attempt_history]
    upd = update_attempts(history, old.attempts, old.failed_attempts, obs.pods, obs.now)
    d.new.attempt_history = [Attempt.model_validate(r) for r in upd.history]
    d.new.attempts, d.new.failed_attempts = upd.attempts, upd.failed_attempts
    if upd.history and not d.new.start_time:
        d.new.start_time = upd.history[0].get("startTime") or obs.now
    if obs.job is not None:
        d.new.job_name = obs.job.name
    return upd


def _not_accepted(d: Draft) -> None:
    problems = d.obs.problems
    reason = problems[0].reason
    message = "; ".join(p.message for p in problems)
    if not d.conds.unchanged(ACCEPTED, "False", message):
        d.event("Warning", reason, message)
    d.conds.set(ACCEPTED, False, reason, message)
    d.conds.set(RUNNING, False, Reason.NOT_ACCEPTED)
    d.phase(PENDING, f"Not accepted: {message}")


def _job_refused(d: Draft) -> Decision:
    """The API server refused the Job: invalid (final) or forbidden (retried by the reconciler)."""
    error = d.obs.create_error
    assert error is not None
    if error.reason == Reason.JOB_INVALID:
        message = f"{error.message}. Not retried: delete this LoRAFineTune and create it again with a fixed spec."
        d.conds.set(ACCEPTED, False, error.reason, message)
        return d.final(FAILED, error.reason, message, event_reason=error.reason)
    message = f"{error.message} (retrying)"
    if not d.conds.unchanged(RUNNING, "False", message):
        d.event("Warning", error.reason, message)
    d.conds.set(RUNNING, False, error.reason, message)
    d.phase(PENDING, message)
    return d.done()


# --- spec changes -----------------------------------------------------------------------------


def changed_paths(old: Any, new: Any, prefix: str = "spec") -> list[str]:
    """Field paths that differ between two JSON values (dicts are walked, lists compared whole)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += changed_paths(old.get(key), new.get(key), f"{prefix}.{key}")
        return out
    return [] if old == new else [prefix]


def ignored_changes(spec: LoRAFineTuneSpec | None, job: JobView | None) -> list[str]:
    if spec is None or job is None or not job.applied_spec:
        return []
    try:
        applied = json.loads(job.applied_spec)
    except ValueError:
        return []
    return changed_paths(applied, applied_spec(spec))


def _spec_changes(d: Draft, after: str = "") -> None:
    """SpecChangeIgnored: the spec differs from what the Job was built from (`after`: why, for multi-node runs)."""
    ignored = ignored_changes(d.obs.spec, d.obs.job)
    if ignored:
        # A re-created resource is another run (new uid): it does not resume this one's checkpoints.
        after = after or f"Job {d.obs.job_name} was created and will not be applied (a Job's pod template is immutable)"
        message = (
            f"{', '.join(ignored)} changed after {after}. To train with the new settings, create a new LoRAFineTune "
            "with another name and output.uri; to continue from this run's training, set its output.resumeFrom "
            "to one of this run's checkpoint URIs (under <output.uri>/checkpoints/), or set output.overwrite: "
            "true to start over under the same output.uri."
        )
        if not d.conds.unchanged(SPEC_CHANGE_IGNORED, "True", message):
            d.event("Warning", SPEC_CHANGE_IGNORED, message)
        d.conds.set(SPEC_CHANGE_IGNORED, True, Reason.SPEC_CHANGED_AFTER_START, message)
    elif d.conds.get(SPEC_CHANGE_IGNORED) is not None:
        d.conds.set(SPEC_CHANGE_IGNORED, False, Reason.SPEC_MATCHES_JOB, "The spec matches the running Job.")


# --- final states -----------------------------------------------------------------------------


def _final_state(d: Draft, upd: AttemptUpdate) -> Decision | None:
    job = d.obs.job
    if upd.succeeded is not None or (job is not None and job.complete):
        return _succeeded(d, upd)
    invalid = next((r for r in upd.history if outcome(r) == "invalid_input"), None)
    if invalid is not None:  # the Job's podFailurePolicy fails it (FailJob): nothing to stop
        text = f"Invalid input, not retried: {describe(invalid)}"
        return d.final(FAILED, invalid.get("reason") or Reason.INVALID_INPUT, text)
    failed = _failed(d, upd)
    if failed is not None:
        return failed
    timed_out = pod_creation_timed_out(d, upd.history)
    if timed_out is not None:
        d.job_patches.append(stop_patch())
        return d.final(FAILED, Reason.POD_CREATION_TIMEOUT, timed_out, event_reason=Reason.POD_CREATION_TIMEOUT)
    if d.obs.job_lost or job is None:
        text = (
            f"Job {d.obs.job_name} was deleted before it finished. To continue, create a LoRAFineTune with "
            "output.resumeFrom set to a checkpoint of this run (under <output.uri>/checkpoints/), or with "
            "output.overwrite: true to start over."
        )
        return d.final(FAILED, Reason.JOB_DELETED, text)
    return None


def _succeeded(d: Draft, upd: AttemptUpdate) -> Decision:
    pod = upd.succeeded[1] if upd.succeeded is not None else None
    result = TerminationMessage.decode(pod.term_message) if pod is not None else None
    text = "Training completed."
    if result is not None and result.adapter is not None:
        d.new.adapter = result.adapter
        text = f"Training completed; adapter at {result.adapter.uri}."
    if result is not None:
        # The trainer has exited: its final numbers may go in without racing its own patches.
        if d.obs.uid and (result.metrics is not None or (result.step is not None and result.total_steps)):
            d.extra_patch["trainerUid"] = d.obs.uid
        if result.metrics is not None:
            d.extra_patch["metrics"] = result.metrics.to_wire()
        if result.step is not None and result.total_steps:
            d.extra_patch["progress"] = _final_progress(d.obs.status.get("progress") or {}, result)
    elif pod is None:
        text = "Training completed (the Job finished; its pod, with the adapter URI, was not seen)."
    decision = d.final(SUCCEEDED, Reason.COMPLETED, text)
    verdict = result.servability if result is not None else None
    if verdict is not None:  # after Succeeded: can a serving engine load the adapter as it is
        decision.events.append(Event("Normal" if verdict.servable else "Warning",
                                     Reason.SERVABLE if verdict.servable else Reason.NOT_SERVABLE, verdict.describe()))
    return decision


def _final_progress(last: dict[str, Any], result: TerminationMessage) -> dict[str, Any]:
    """The final step from the trainer's result; the epoch and throughput from its last progress patch (the
    progress object is replaced as a whole: without them they would vanish at the end)."""
    kept = {"epoch": last.get("epoch"), "tokens_per_second": last.get("tokensPerSecond")}
    resumed = result.resumed_from_step if result.resumed_from_step is not None else last.get("resumedFromStep")
    fields = {k: v for k, v in {**kept, "resumed_from_step": resumed}.items() if isinstance(v, (int, float))}
    return Progress.build(result.step or 0, result.total_steps or 0, eta_seconds=0, **fields).to_wire()


def _failed(d: Draft, upd: AttemptUpdate) -> Decision | None:
    """The Job controller's verdict (BackoffLimitExceeded, DeadlineExceeded, PodFailurePolicy), with the last
    attempt's reason and message: the Job counts the retries (runPolicy.backoffLimit is its backoffLimit)."""
    job = d.obs.job
    last_failure = upd.failed[-1] if upd.failed else last_failed(upd.history)
    if job is None or job.failed_reason is None:
        return None
    reason = job.failed_reason
    text = f"Job failed ({reason}: {job.failed_message or 'no message'})"
    if reason == POD_FAILURE_POLICY_REASON:
        # FailJob matched exit code 3 of a pod not seen (garbage-collected): still invalid input.
        return d.final(FAILED, Reason.INVALID_INPUT, f"Invalid input, not retried: {text}")
    if last_failure is not None:
        reason = last_failure.get("reason") or reason
        text += f"; {upd.failed_attempts} failed attempts; last attempt: {describe(last_failure)}"
    return d.final(FAILED, reason, text)


# --- in progress ------------------------------------------------------------------------------


def _in_progress(d: Draft, upd: AttemptUpdate, job: JobView) -> None:
    spec = d.obs.spec
    backoff_limit = spec.run_policy.backoff_limit if spec is not None else 0
    for rec in upd.failed:
        d.event(
            "Warning",
            Reason.RETRYING,
            f"Attempt {attempt_no(upd, rec)} failed: {describe(rec)}; retrying "
            f"({upd.failed_attempts}/{backoff_limit} failures), resuming from the newest checkpoint.",
        )
    if spec is not None:
        policy = run_policy_patch(spec, job.run_policy)
        if policy is not None:
            d.job_patches.append(policy)
    if spec is not None and spec.suspend:
        _suspending(d, upd, job)
    else:
        _not_suspended(d, upd, job)
    d.conds.set(SUCCEEDED, False, Reason.IN_PROGRESS)
    d.conds.set(FAILED, False, Reason.IN_PROGRESS)


def _active(upd: AttemptUpdate) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    active = [r for r in upd.history if r["phase"] in ("Pending", "Running")]
    return active, [r for r in active if r["phase"] == "Running"]


def _suspending(d: Draft, upd: AttemptUpdate, job: JobView) -> None:
    active, running = _active(upd)
    if not job.suspended:
        d.job_patches.append(suspend_patch(True))
    if not d.conds.true(SUSPENDED):
        d.event("Normal", Reason.SUSPENDED, "Suspend requested: the trainer saves a checkpoint and stops.")
    if active:
        d.conds.set(SUSPENDED, True, Reason.SUSPENDING, "Waiting for the trainer to save a checkpoint and exit.")
        d.phase("Running" if running else PENDING, "Suspending: the trainer saves a checkpoint.")
    else:
        d.conds.set(SUSPENDED, True, Reason.SUSPENDED, "No trainer pod runs; set spec.suspend to false to resume.")
        d.phase("Suspended", "Suspended; set spec.suspend to false to resume from the newest checkpoint.")
    d.conds.set(RUNNING, bool(running), Reason.SUSPENDING if running else Reason.SUSPENDED)


def _not_suspended(d: Draft, upd: AttemptUpdate, job: JobView) -> None:
    _, running = _active(upd)
    if job.suspended and d.conds.true(SUSPENDED):
        # Only a suspend of the operator's is undone: a Job suspended by someone else (Kueue, queueing it) stays so.
        d.job_patches.append(suspend_patch(False))
    if d.conds.true(SUSPENDED):
        d.event("Normal", Reason.RESUMED, "Resumed: a new attempt resumes from the newest checkpoint.")
        d.conds.set(SUSPENDED, False, Reason.RESUMED)
    elif d.conds.get(SUSPENDED) is None:
        d.conds.set(SUSPENDED, False, Reason.NOT_SUSPENDED)
    if running:
        rec = running[-1]
        message = f"Attempt {attempt_no(upd, rec)} running (pod {rec['pod']})."
        d.conds.set(RUNNING, True, Reason.TRAINER_RUNNING, message)
        d.phase("Running", message)
        return
    reason, message = _pending_reason(d, upd)
    old = d.conds.get(RUNNING)
    if reason == Reason.POD_CREATION_FAILED and (old is None or old.reason != reason):
        d.event("Warning", reason, message)
    d.conds.set(RUNNING, False, reason, message)
    d.phase(PENDING, message)


def _pending_reason(d: Draft, upd: AttemptUpdate) -> tuple[str, str]:
    pods, spec = d.obs.pods, d.obs.spec
    backoff_limit = spec.run_policy.backoff_limit if spec is not None else 0
    last_failure = upd.failed[-1] if upd.failed else last_failed(upd.history)
    failure = pod_failure(d, upd.history)
    if d.obs.job is not None and d.obs.job.suspended:
        return Reason.POD_PENDING, ("The Job is suspended by another controller (e.g. Kueue, until it admits the "
                                    "Job): no trainer pod until it resumes the Job.")
    if failure is not None:
        return Reason.POD_CREATION_FAILED, f"The Job controller cannot create the trainer pod: {failure.message}"
    waiting = next((p for p in pods if p.waiting_reason and not p.terminated), None)
    if waiting is not None:
        detail = f": {truncate(waiting.waiting_message, 200)}" if waiting.waiting_message else ""
        return (
            waiting.waiting_reason or Reason.POD_PENDING,
            f"Trainer pod {waiting.name} waiting ({waiting.waiting_reason}){detail}",
        )
    unschedulable = next((p for p in pods if p.unschedulable and not p.terminated), None)
    if unschedulable is not None:
        return (
            Reason.UNSCHEDULABLE,
            f"Trainer pod {unschedulable.name} cannot be scheduled: {truncate(unschedulable.unschedulable, 300)}",
        )
    if upd.history and upd.history[-1].get("phase") == "Failed" and last_failure is not None:
        return Reason.RETRYING, (
            f"Attempt {attempt_no(upd, last_failure)} failed ({describe(last_failure)}); waiting for the Job "
            "controller to retry "
            f"({upd.failed_attempts}/{backoff_limit} failures)."
        )
    if upd.history and upd.history[-1].get("phase") == "Pending":
        return Reason.POD_PENDING, f"Trainer pod {upd.history[-1]['pod']} is pending (scheduling, image pull)."
    return Reason.JOB_CREATED, "Waiting for the Job controller to create the trainer pod."
