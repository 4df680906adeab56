"""Condition types and reasons of a LoRAFineTune, as named constants.

Every reason a user can read in `kubectl describe` (conditions and Events) is named here, so the
operator, the trainer and the tests use one spelling, and the README's table has one source.
"""

from __future__ import annotations

# --- condition types --------------------------------------------------------------------------
ACCEPTED = "Accepted"
RUNNING = "Running"
SUSPENDED = "Suspended"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
SPEC_CHANGE_IGNORED = "SpecChangeIgnored"
CONDITION_TYPES = (ACCEPTED, RUNNING, SUSPENDED, SUCCEEDED, FAILED, SPEC_CHANGE_IGNORED)

# --- phases (status.phase, for display) -------------------------------------------------------
PENDING = "Pending"
TERMINAL_PHASES = (SUCCEEDED, FAILED)


class Reason:
    """Reasons of conditions and Events (CamelCase, per the API conventions)."""

    # accepted / not accepted
    ACCEPTED = "Accepted"
    NOT_ACCEPTED = "NotAccepted"
    INVALID_SPEC = "InvalidSpec"
    NAME_TOO_LONG = "NameTooLong"
    QUANTIZATION_NEEDS_GPU = "QuantizationNeedsGPU"
    PROCESSES_MISMATCH_GPUS = "ProcessesMismatchGPUs"
    INVALID_POD_TEMPLATE = "InvalidPodTemplate"
    STORAGE_SECRET_NOT_FOUND = "StorageSecretNotFound"
    # the Job and its pods
    JOB_CREATED = "JobCreated"
    STARTED = "Started"
    POD_PENDING = "PodPending"
    UNSCHEDULABLE = "Unschedulable"
    TRAINER_RUNNING = "TrainerRunning"
    RETRYING = "Retrying"
    POD_DELETED = "PodDeleted"
    IN_PROGRESS = "InProgress"
    # suspend / resume
    SUSPENDING = "Suspending"
    SUSPENDED = "Suspended"
    RESUMED = "Resumed"
    NOT_SUSPENDED = "NotSuspended"
    # spec changes after the Job exists
    SPEC_CHANGED_AFTER_START = "SpecChangedAfterStart"
    SPEC_MATCHES_JOB = "SpecMatchesJob"
    # endings
    COMPLETED = "Completed"
    INVALID_INPUT = "InvalidInput"
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    JOB_DELETED = "JobDeleted"
    ERROR = "Error"
