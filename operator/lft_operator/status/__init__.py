"""Status logic (pure): from what the operator observes to the status it writes.

`decide(Observation) -> Decision`: the new operator-owned status fields (phase, conditions per the
Kubernetes API conventions, attempts), the Events to post for the transitions, and the patches
the Job needs (suspend, resume, stop, runPolicy). No I/O here: reconcile.py gathers the
observation and applies the decision.

Rules, in order:
1. Succeeded and Failed are final.
2. A trainer exit code 0 (or the Job's Complete condition) -> Succeeded, with the adapter and final
   metrics from the termination message.
3. Exit code INVALID_INPUT -> Failed at once, with the trainer's reason and message (the Job's
   podFailurePolicy fails the Job itself: condition Failed, reason PodFailurePolicy).
4. The Job's Failed condition (BackoffLimitExceeded, DeadlineExceeded, PodFailurePolicy) -> Failed with
   the last attempt's reason. The Job controller counts the retries (backoffLimit = runPolicy's, its
   count in status.failed survives pod garbage collection); the operator only reports them.
5. The Job refused by the API server (422 JobInvalid: Failed; 403 JobForbidden: Pending, retried),
   or no pod creatable for the Job (PodCreationFailed; after the timeout, Failed PodCreationTimeout).
6. A Job that vanished before it finished -> Failed (JobDeleted).
7. Otherwise Pending / Running / Suspended from the spec and the pods; under Kueue (queue.py) from its Workload
   too (Queued, Preempted, Deactivated), and suspend/resume through the Workload's spec.active.

Failures count toward backoffLimit as the Job controller counts them: a pod that ended Failed, neither
deleted nor disrupted. Pods deleted on purpose (suspend, kubectl delete pod) and disrupted pods
(DisruptionTarget: eviction, preemption; the Job's podFailurePolicy ignores them) are "Stopped".

The status is built as the LoRAFineTuneStatus model (lft_api.resource) and written as a patch of
the operator-owned fields that changed. Modules: model.py (Observation, Decision, the patch),
conditions.py, attempts.py, failures.py (refused Jobs, uncreatable pods, checkpoint health),
draft.py (the status being built), decide.py (the rules of a single-pod run), gang.py (of a multi-node
run), rules.py (the rules both apply), trust.py (what of the status as read the
operator trusts: its own fields only as it wrote them, the trainer's only under the run's UID).
"""

from lft_api.conditions import TERMINAL_PHASES

from .attempts import AttemptUpdate, attempt_phase, outcome, update_attempts
from .conditions import Conditions, get_condition, set_condition
from .decide import decide
from .failures import classify_create_error, newest_failed_create, wants_pod
from .model import (
    OWNED_FIELDS,
    Decision,
    Event,
    Observation,
    PodCreationFailure,
    Problem,
    now_rfc3339,
    status_json_patch,
)
from .rules import changed_paths, ignored_changes
from .trust import Trusted, reverted, trusted_status

__all__ = [
    "OWNED_FIELDS",
    "TERMINAL_PHASES",
    "AttemptUpdate",
    "Conditions",
    "Decision",
    "Event",
    "Observation",
    "PodCreationFailure",
    "Problem",
    "attempt_phase",
    "changed_paths",
    "classify_create_error",
    "decide",
    "get_condition",
    "newest_failed_create",
    "ignored_changes",
    "now_rfc3339",
    "outcome",
    "set_condition",
    "status_json_patch",
    "Trusted",
    "reverted",
    "trusted_status",
    "update_attempts",
    "wants_pod",
]
