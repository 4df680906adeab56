"""Every run ends in a true, explained state: failures outside the trainer, on a real API server.

Refused Jobs (422, 403), pods the Job controller cannot create (the real quota admission and Job
controller), output prefixes two resources claim, unknown fields (pruned), failing checkpoint uploads.
The test operator runs with LFT_POD_CREATION_TIMEOUT_SECONDS=20 (conftest.py).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from lft_api.conditions import ACCEPTED, CHECKPOINTS_HEALTHY, RUNNING, Reason
from tests.support.kube import NAMESPACE_PREFIX, ApiError, Kube, wait_until
from tests.support.operator import cond, is_true, spec

pytestmark = pytest.mark.integration

VISIBLE = 30  # seconds: every failure shows in status, a condition and an Event within this


def events_with(kube: Kube, ns: str, name: str, reason: str) -> list[dict]:
    return [e for e in kube.events(ns, name) if e["reason"] == reason]


def pending_under_quota(kube: Kube, ns: str, name: str, hard: dict[str, str], reason: str) -> dict:
    """Under a quota that refuses what the run needs: Pending, Running=False `reason`, quoting the
    quota, and a Warning Event, within VISIBLE seconds. The status."""
    kube.quota(ns, hard)
    kube.create_lft(ns, name, spec())
    status = kube.wait_lft(ns, name, lambda s: cond(s, RUNNING).get("reason") == reason, timeout=VISIBLE)["status"]
    assert status["phase"] == "Pending" and "exceeded quota" in status["message"]
    wait_until(lambda: events_with(kube, ns, name, reason), 10)
    return status


def test_a_later_resource_on_the_same_output_prefix_is_refused_until_the_first_is_gone(kube, namespace, operator):
    first = spec()
    uri = first["output"]["uri"]
    kube.create_lft(namespace, "first", first)
    kube.wait_lft(namespace, "first", lambda s: is_true(s, ACCEPTED))
    kube.create_lft(namespace, "second", spec(output={"uri": f"{uri}/nested/"}))
    status = kube.wait_lft(namespace, "second", lambda s: cond(s, ACCEPTED).get("status") == "False")["status"]
    accepted = cond(status, ACCEPTED)
    assert accepted["reason"] == Reason.OUTPUT_IN_USE and f"{namespace}/first" in accepted["message"]
    assert "another output.uri" in status["message"]
    wait_until(lambda: events_with(kube, namespace, "second", Reason.OUTPUT_IN_USE), 10)
    assert kube.jobs(namespace, "second") == []
    # The first one is unaffected.
    assert is_true(kube.lft(namespace, "first")["status"], ACCEPTED) and kube.job(namespace, "first") is not None

    kube.delete(kube.lft_path(namespace, "first"))
    kube.wait_lft(namespace, "second", lambda s: is_true(s, ACCEPTED))
    assert kube.job(namespace, "second") is not None


def test_a_resource_the_policy_refused_holds_no_output_prefix(kube, namespace, operator):
    """Created first, refused by the admin policy (a hostPath volume), it never runs: a later resource on the
    same output.uri is accepted."""
    uri = spec()["output"]["uri"]
    squatter = spec(output={"uri": uri}, podTemplate={"volumes": [{"name": "host", "hostPath": {"path": "/"}}]})
    kube.create_lft(namespace, "squatter", squatter)
    status = kube.wait_lft(namespace, "squatter", lambda s: cond(s, ACCEPTED).get("status") == "False")["status"]
    assert cond(status, ACCEPTED)["reason"] == Reason.POLICY_VIOLATION
    kube.create_lft(namespace, "real", spec(output={"uri": f"{uri}/nested"}))
    kube.wait_lft(namespace, "real", lambda s: is_true(s, ACCEPTED))
    assert kube.job(namespace, "real") is not None and kube.jobs(namespace, "squatter") == []


def test_output_prefixes_are_claimed_per_namespace_and_never_name_another(kube, namespace, operator):
    """A live run in another namespace on the same output.uri neither refuses this one nor shows up in its
    status or Events (across namespaces, the trainer's pre-flight check of the prefix's artifacts applies)."""
    other = f"{NAMESPACE_PREFIX}{uuid.uuid4().hex[:8]}"
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}})
    try:
        uri = spec()["output"]["uri"]
        kube.create_lft(other, "hidden-project", spec(output={"uri": uri}))
        kube.wait_lft(other, "hidden-project", lambda s: is_true(s, ACCEPTED))
        kube.create_lft(namespace, "mine", spec(output={"uri": uri}))
        status = kube.wait_lft(namespace, "mine", lambda s: is_true(s, ACCEPTED))["status"]
        assert kube.job(namespace, "mine") is not None
        seen = json.dumps(status) + json.dumps(kube.events(namespace, "mine"))
        assert other not in seen and "hidden-project" not in seen
    finally:
        kube.delete(f"/api/v1/namespaces/{other}")
        kube.remove_pods(other)


def test_job_rejected_by_the_api_server_fails_with_its_message(kube, namespace, operator):
    # A volume named like the operator's own ConfigMap volume: the Job is invalid (Duplicate value).
    template = {"volumes": [{"name": "config", "emptyDir": {}}]}
    started = time.monotonic()
    kube.create_lft(namespace, "dup", spec(podTemplate=template))
    status = kube.wait_lft(namespace, "dup", lambda s: s.get("phase") == "Failed", timeout=VISIBLE)["status"]
    assert time.monotonic() - started < VISIBLE
    failed = cond(status, "Failed")
    assert failed["reason"] == Reason.JOB_INVALID and "Duplicate value" in status["message"]
    wait_until(lambda: events_with(kube, namespace, "dup", Reason.JOB_INVALID), 10)
    assert kube.jobs(namespace, "dup") == []
    # Not retried: still one Event a few seconds later.
    time.sleep(3)
    assert len(events_with(kube, namespace, "dup", Reason.JOB_INVALID)) == 1


def test_job_creation_forbidden_by_quota_is_pending_then_proceeds(kube, namespace, operator):
    pending_under_quota(kube, namespace, "noquota", {"count/jobs.batch": "0"}, Reason.JOB_FORBIDDEN)

    kube.delete(f"/api/v1/namespaces/{namespace}/resourcequotas/q")
    status = kube.wait_lft(namespace, "noquota", lambda s: is_true(s, ACCEPTED), timeout=60)["status"]
    assert cond(status, RUNNING).get("reason") != Reason.JOB_FORBIDDEN and kube.job(namespace, "noquota")


def test_pod_creation_failing_is_pending_with_the_reason_then_times_out(kube, namespace, operator):
    pending_under_quota(kube, namespace, "nopods", {"pods": "0"}, Reason.POD_CREATION_FAILED)

    status = kube.wait_lft(namespace, "nopods", lambda s: s.get("phase") == "Failed", timeout=60)["status"]
    assert cond(status, "Failed")["reason"] == Reason.POD_CREATION_TIMEOUT and "exceeded quota" in status["message"]
    wait_until(lambda: events_with(kube, namespace, "nopods", Reason.POD_CREATION_TIMEOUT), 10)
    # The Job is stopped: a past activeDeadlineSeconds, and the Job controller ends it (DeadlineExceeded).
    wait_until(lambda: (kube.job(namespace, "nopods") or {}).get("spec", {}).get("activeDeadlineSeconds") == 1, 10)
    failed = wait_until(lambda: kube.job_condition(namespace, "nopods", "Failed"), 20, what="the Job's Failed condition")
    assert failed["reason"] == "DeadlineExceeded"


def test_unknown_fields_never_reach_the_operator(kube, namespace, operator):
    # The schema is structural: a client asking for strict validation (as kubectl does) is refused, naming the
    # field; one that asks for nothing (the tests' REST client, like some API libraries) has it pruned, so the
    # resource runs with what is stored, never with a field the operator did not see.
    body = {"apiVersion": "finetune.dev/v1alpha1", "kind": "LoRAFineTune", "metadata": {"name": "typo"},
            "spec": spec(lora={"rank": 4})}
    with pytest.raises(ApiError) as refused:
        kube.request("POST", kube.lft_path(namespace) + "?fieldValidation=Strict", body)
    assert refused.value.status == 400 and 'unknown field "spec.lora.rank"' in refused.value.message
    created = kube.create_lft(namespace, "typo", spec(lora={"rank": 4}))
    assert "rank" not in created["spec"]["lora"]  # pruned, not stored
    kube.wait_lft(namespace, "typo", lambda s: is_true(s, ACCEPTED))


def test_failing_checkpoint_uploads_set_the_condition_and_warn_once(kube, namespace, operator):
    kube.create_lft(namespace, "uploads", spec())
    uid = kube.wait_lft(namespace, "uploads", lambda s: is_true(s, ACCEPTED))["metadata"]["uid"]

    def report(**health) -> None:  # as the trainer sends it: with the run's UID
        body = {"status": {"checkpointHealth": health, "trainerUid": uid}}
        kube.merge_patch(kube.lft_path(namespace, "uploads", "status"), body)

    report(healthy=False, message="AccessDenied: s3://lft-out", failedUploads=1)
    status = kube.wait_lft(
        namespace, "uploads", lambda s: cond(s, CHECKPOINTS_HEALTHY).get("status") == "False", timeout=VISIBLE
    )["status"]
    c = cond(status, CHECKPOINTS_HEALTHY)
    assert c["reason"] == Reason.CHECKPOINT_UPLOAD_FAILING and "AccessDenied" in c["message"]
    wait_until(lambda: events_with(kube, namespace, "uploads", Reason.CHECKPOINT_UPLOAD_FAILING), 10)

    report(healthy=False, message="AccessDenied: s3://lft-out", failedUploads=2)
    kube.wait_lft(namespace, "uploads", lambda s: "2 in a row" in cond(s, CHECKPOINTS_HEALTHY).get("message", ""))
    report(healthy=True, failedUploads=0, lastUploadedStep=20)
    kube.wait_lft(namespace, "uploads", lambda s: is_true(s, CHECKPOINTS_HEALTHY))
    assert len(events_with(kube, namespace, "uploads", Reason.CHECKPOINT_UPLOAD_FAILING)) == 1
