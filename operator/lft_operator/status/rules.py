"""The status rules both paths apply, the single-pod run (decide.py) and the multi-node run (gang.py), as peers:
a spec not accepted, spec changes after the start (SpecChangeIgnored), and Succeeded with the trainer's result
(pure)."""

from __future__ import annotations

import json
from typing import Any

from lft_api.conditions import ACCEPTED, PENDING, RUNNING, SPEC_CHANGE_IGNORED, SUCCEEDED, Reason
from lft_api.contract import Progress, TerminationMessage
from lft_api.resource import LoRAFineTuneSpec

from ..builders import applied_spec
from ..views import JobView, PodView
from .draft import Draft
from .model import Decision, Event


def not_accepted(d: Draft) -> None:
    """Accepted False with the first problem's reason and every problem's message (an Event once per message)."""
    problems = d.obs.problems
    reason = problems[0].reason
    message = "; ".join(p.message for p in problems)
    if not d.conds.unchanged(ACCEPTED, "False", message):
        d.event("Warning", reason, message)
    d.conds.set(ACCEPTED, False, reason, message)
    d.conds.set(RUNNING, False, Reason.NOT_ACCEPTED)
    d.phase(PENDING, f"Not accepted: {message}")


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


def spec_changes(d: Draft, after: str = "") -> None:
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


def succeeded(d: Draft, pod: PodView | None) -> Decision:
    """Succeeded, with the adapter, metrics and final progress from `pod`'s termination message (the pod that
    exited 0; None when the Job completed without it being seen) and the servability verdict as an Event."""
    result = TerminationMessage.decode(pod.term_message) if pod is not None else None
    stop = result.stopped_early if result is not None else None
    done = "Training completed" + (f" ({stop.describe()})" if stop is not None else "")  # training.earlyStopping
    text = f"{done}."
    if result is not None and result.adapter is not None:
        d.new.adapter = result.adapter
        oci = result.adapter.oci
        text = f"{done}; adapter at {result.adapter.uri}" + (f" and {oci.pinned()}." if oci else ".")
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
    registration = result.model_registration if result is not None else None
    if registration is not None:  # training.mlflow.registeredModelName: a failure leaves the run Succeeded
        failed = registration.error is not None
        decision.events.append(Event("Warning" if failed else "Normal", Reason.MODEL_REGISTRATION_FAILED if failed
                                     else Reason.MODEL_REGISTERED, registration.describe()))
    return decision


def _final_progress(last: dict[str, Any], result: TerminationMessage) -> dict[str, Any]:
    """The final step from the trainer's result; the epoch and throughput from its last progress patch (the
    progress object is replaced as a whole: without them they would vanish at the end)."""
    kept = {"epoch": last.get("epoch"), "tokens_per_second": last.get("tokensPerSecond")}
    resumed = result.resumed_from_step if result.resumed_from_step is not None else last.get("resumedFromStep")
    fields = {k: v for k, v in {**kept, "resumed_from_step": resumed}.items() if isinstance(v, (int, float))}
    return Progress.build(result.step or 0, result.total_steps or 0, eta_seconds=0, **fields).to_wire()
