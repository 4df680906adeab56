"""The Job's policies (pure): its pod failure policy, and the patches that suspend, resume and stop it or
bring it in line with spec.runPolicy. builders.job() puts them in the Job it builds."""

from __future__ import annotations

import json
from typing import Any

from lft_api import contract
from lft_api.resource import LoRAFineTuneSpec

CONTAINER_NAME = "trainer"
RUN_POLICY_ANNOTATION = f"{contract.API_GROUP}/run-policy"

# The trainer's exit code for invalid input (config, dataset row, model, credentials): retrying cannot help.
INVALID_INPUT_RULE: dict[str, Any] = {
    "action": "FailJob",
    "onExitCodes": {"containerName": CONTAINER_NAME, "operator": "In", "values": [int(contract.ExitCode.INVALID_INPUT)]},
}
# A pod evicted, preempted or drained (the API server, scheduler, kubelet or taint manager set DisruptionTarget):
# its trainer checkpointed on SIGTERM, and the replacement resumes; no retry is spent.
DISRUPTION_RULE: dict[str, Any] = {
    "action": "Ignore",
    "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
}
# The Job controller's condition reason when a FailJob rule matched (batch/v1 JobReasonPodFailurePolicy).
POD_FAILURE_POLICY_REASON = "PodFailurePolicy"


def pod_failure_policy() -> dict[str, Any]:
    return {"rules": [dict(INVALID_INPUT_RULE), dict(DISRUPTION_RULE)]}


def run_policy_json(spec: LoRAFineTuneSpec) -> str:
    return json.dumps(spec.run_policy.to_wire(), sort_keys=True, separators=(",", ":"))


def run_policy_patch(spec: LoRAFineTuneSpec, applied: str | None) -> dict[str, Any] | None:
    """Merge patch bringing a Job in line with spec.runPolicy; None when `applied` (the Job's
    run-policy annotation) already matches.

    Compared with the annotation, not the Job's fields: what the API server defaults or drops must not
    cause a patch loop.
    """
    wanted = run_policy_json(spec)
    if applied == wanted:
        return None
    policy = spec.run_policy
    return {
        "metadata": {"annotations": {RUN_POLICY_ANNOTATION: wanted}},
        "spec": {
            "backoffLimit": policy.backoff_limit,
            "activeDeadlineSeconds": policy.active_deadline_seconds,
            "ttlSecondsAfterFinished": policy.ttl_seconds_after_finished,
        },
    }


def suspend_patch(suspend: bool) -> dict[str, Any]:
    """Job.spec.suspend: true deletes the pods (SIGTERM: the trainer checkpoints), false starts new ones."""
    return {"spec": {"suspend": suspend}}


def stop_patch() -> dict[str, Any]:
    """End a Job for good as Failed (DeadlineExceeded), for what its own policies cannot see (no pod could be
    created for too long): a one-second activeDeadlineSeconds, already past. Its active pods are deleted,
    ended ones stay (logs), and ttlSecondsAfterFinished still applies."""
    return {"spec": {"activeDeadlineSeconds": 1}}
