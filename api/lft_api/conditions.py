"""Condition types and reasons of a LoRAFineTune, as named constants.

Every reason a user can read in `kubectl describe` (conditions and Events) is named here, so the
operator, the trainer and the tests use one spelling, and the reasons table of docs/status.md has one source.
"""

from __future__ import annotations

# --- condition types --------------------------------------------------------------------------
ACCEPTED = "Accepted"
RUNNING = "Running"
SUSPENDED = "Suspended"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
SPEC_CHANGE_IGNORED = "SpecChangeIgnored"
CHECKPOINTS_HEALTHY = "CheckpointsHealthy"
CONDITION_TYPES = (ACCEPTED, RUNNING, SUSPENDED, SUCCEEDED, FAILED, SPEC_CHANGE_IGNORED, CHECKPOINTS_HEALTHY)

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
    OPTIMIZER_NEEDS_GPU = "OptimizerNeedsGPU"  # training.optimizer is a bitsandbytes one and no GPU is requested
    PROCESSES_MISMATCH_GPUS = "ProcessesMismatchGPUs"
    INVALID_POD_TEMPLATE = "InvalidPodTemplate"
    # a field the API does not know: only where the installed CRD predates the structural schema (which refuses
    # or prunes unknown fields at the API server), e.g. a Helm upgrade, which never upgrades CRDs
    UNKNOWN_FIELD = "UnknownField"
    POLICY_VIOLATION = "PolicyViolation"  # the spec asks for what the operator's admin policy does not allow
    OUTPUT_IN_USE = "OutputInUse"  # output.uri holds, or another resource writes, another run's artifacts
    # creating the Job and its pods
    JOB_INVALID = "JobInvalid"  # the API server rejected the Job (422): final
    JOB_FORBIDDEN = "JobForbidden"  # 403 (RBAC, quota on jobs): retried with backoff
    NAME_TAKEN = "NameTaken"  # an object the run needs exists, not created for it: retried with backoff
    POD_CREATION_FAILED = "PodCreationFailed"  # the Job's FailedCreate events (quota, Pod Security, ...)
    POD_CREATION_TIMEOUT = "PodCreationTimeout"  # no pod could be created for too long: final
    # the Job and its pods
    JOB_CREATED = "JobCreated"
    STARTED = "Started"
    POD_PENDING = "PodPending"
    UNSCHEDULABLE = "Unschedulable"
    TRAINER_RUNNING = "TrainerRunning"
    RETRYING = "Retrying"
    POD_DELETED = "PodDeleted"
    ATTEMPT_ENDING = "AttemptEnding"  # multi-node: waiting for every pod of an ended attempt to stop
    NODE_UNREACHABLE = "NodeUnreachable"  # multi-node: a rank's node stopped reporting; the attempt waits for it
    IN_PROGRESS = "InProgress"
    # suspend / resume
    SUSPENDING = "Suspending"
    SUSPENDED = "Suspended"
    RESUMED = "Resumed"
    NOT_SUSPENDED = "NotSuspended"
    # Kueue (spec.queueName, or the namespace's default LocalQueue): the run's Workload not admitted yet (Running=False,
    # Pending, with Kueue's own message), evicted for a higher-priority Workload (Suspended=True, Suspended until
    # Kueue admits it again: it resumes from the newest checkpoint), or deactivated by Kueue or an admin
    # (spec.active false not set by the operator: e.g. Kueue's requeuing limit or maximum execution time)
    QUEUED = "Queued"
    PREEMPTED = "Preempted"
    DEACTIVATED = "Deactivated"
    # spec changes after the Job exists
    SPEC_CHANGED_AFTER_START = "SpecChangedAfterStart"
    SPEC_MATCHES_JOB = "SpecMatchesJob"
    # checkpoints
    CHECKPOINTS_UPLOADING = "CheckpointsUploading"
    CHECKPOINT_UPLOAD_FAILING = "CheckpointUploadFailing"
    # endings
    COMPLETED = "Completed"
    INVALID_INPUT = "InvalidInput"
    OUT_OF_MEMORY = "OutOfMemory"  # the trainer ran out of GPU memory; the message has the estimate and what to change
    # a file bound for the output held a value of the pod's Secrets (raw or encoded); nothing of it was
    # uploaded, and the run fails for good (the trainer's exit 3): a retry would write the same bytes
    SECRET_IN_OUTPUT = "SecretInOutput"
    # output.push.oci: the registry refused the adapter (auth, permissions, a bad name); the adapter under
    # output.uri and the summary are written first, and the run fails for good (the trainer's exit 3)
    OCI_PUSH_FAILED = "OciPushFailed"
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    JOB_DELETED = "JobDeleted"
    ERROR = "Error"
    # the adapter of a succeeded run (the trainer's check against a serving engine; an Event only)
    SERVABLE = "Servable"
    NOT_SERVABLE = "NotServable"
    # training.mlflow.registeredModelName: the adapter of a succeeded run registered in the MLflow model
    # registry, or why not (an Event only: the run and its adapter under output.uri stand either way)
    MODEL_REGISTERED = "ModelRegistered"
    MODEL_REGISTRATION_FAILED = "ModelRegistrationFailed"
    # a status write the operator undid: its own fields written by another client, or trainer fields
    # written under another run's UID (an Event only)
    STATUS_REVERTED = "StatusReverted"
    # the trainer's endings (the termination message's reason; the operator quotes it in the Failed condition
    # or in the attempt's record). Bad input (exit 3, never retried): the pre-flight's and the run's checks
    INVALID_CONFIG = "InvalidConfig"
    MODEL_NOT_FOUND = "ModelNotFound"
    UNSUPPORTED_HARDWARE = "UnsupportedHardware"
    DATASET_NOT_FOUND = "DatasetNotFound"
    UNREADABLE_DATASET = "UnreadableDataset"
    INVALID_DATASET = "InvalidDataset"
    NO_CHAT_TEMPLATE = "NoChatTemplate"
    INVALID_CHAT_TEMPLATE = "InvalidChatTemplate"
    INVALID_RESUME_FROM = "InvalidResumeFrom"
    # model.adapter is not a LoRA adapter this run can continue (no adapter_config.json, not LORA, its target
    # modules absent from the model, its weights do not fit, or lora.* set to other values than the adapter's)
    ADAPTER_NOT_USABLE = "AdapterNotUsable"
    # training.extra: a key neither TRL's SFTConfig nor PEFT's LoraConfig has (the message names it and a close
    # match); a value of the wrong type for its field, or one the config refuses
    UNKNOWN_EXTRA_SETTING = "UnknownExtraSetting"
    INVALID_EXTRA_SETTING = "InvalidExtraSetting"
    MISSING_CREDENTIALS = "MissingCredentials"  # storage or tracking credentials absent from the pod
    UNSUPPORTED_STORAGE = "UnsupportedStorage"
    STORAGE_ACCESS_DENIED = "StorageAccessDenied"
    BUCKET_NOT_FOUND = "BucketNotFound"
    STORAGE_UNREACHABLE = "StorageUnreachable"
    UNSAFE_OBJECT_NAME = "UnsafeObjectName"  # an object name that would be written outside the directory
    TRACKING_UNAVAILABLE = "TrackingUnavailable"  # a requested integration's package is not in the image
    TRACKING_UNREACHABLE = "TrackingUnreachable"  # the MLflow server does not answer
    TRACKING_ACCESS_DENIED = "TrackingAccessDenied"  # the MLflow server refuses the credentials
    # retryable (exit 1): storage failed after retries; a torchrun worker failed (multi-process runs). Any other
    # exception ends the attempt with its class name as the reason (lft_trainer.__main__)
    STORAGE_ERROR = "StorageError"
    WORKER_FAILED = "WorkerFailed"
    # SIGTERM (pod deleted, node preempted, suspend): the trainer saved a checkpoint and stopped (exit 4); the
    # same reason as Kueue's preemption (declared above)
