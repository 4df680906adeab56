"""End-to-end: the training Job's native primitives on the real cluster, with the CPU trainer image.

1. Invalid input (a bad dataset row, trainer exit code 3) ends the Job through its podFailurePolicy (FailJob):
   the Job's condition Failed has reason PodFailurePolicy, exactly one pod ever ran, and the run says why.
2. An evicted pod (the Eviction API: DisruptionTarget) costs no retry: the podFailurePolicy ignores it, the Job
   controller counts no failure (status.failed stays 0) and makes a new pod, which resumes from the checkpoint
   the evicted trainer saved on SIGTERM; the run Succeeds with runPolicy.backoffLimit 0.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.support.faults import report
from tests.support.scenarios import (
    BUCKET,
    condition,
    finetune,
    output_prefix,
    summary,
    trainer_started,
    wait_checkpoint,
    wait_phase,
)

pytestmark = pytest.mark.e2e


def job(kube, namespace: str, name: str) -> dict:
    return kube.json("get", "job", f"{name}-trainer", "-n", namespace)


def job_condition(body: dict, type_: str) -> dict:
    return next((c for c in body.get("status", {}).get("conditions", []) if c["type"] == type_
                 and c.get("status") == "True"), {})


def test_invalid_input_ends_the_job_by_its_pod_failure_policy(kube, s3, s3_endpoint, namespace):
    name = "policyfail"
    rows = [json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                     {"role": "assistant", "content": f"a{i}"}]}) for i in range(20)]
    rows[4] = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]})
    key = f"{output_prefix(namespace, name)}/data/train.jsonl"
    s3.put_object(Bucket=BUCKET, Key=key, Body="\n".join(rows).encode())
    res = finetune(namespace, name, s3_endpoint, dataset=f"s3://{BUCKET}/{key}")
    res["spec"]["runPolicy"] = {"backoffLimit": 3}  # retries allowed, none may happen
    started = time.monotonic()
    kube.apply(res, namespace)
    obj = wait_phase(kube, namespace, name, "Failed", 120)
    failed = condition(obj, "Failed")
    assert failed.get("reason") == "InvalidDataset" and "row 5" in failed.get("message", ""), failed
    assert "Invalid input, not retried" in obj["status"]["message"]
    # The Job ended itself: FailJob on exit code 3, no operator patch (no past deadline, parallelism untouched).
    body = kube.wait_for("the Job's Failed condition", lambda: (b := job(kube, namespace, name))
                         and job_condition(b, "Failed") and b, 60)
    assert job_condition(body, "Failed")["reason"] == "PodFailurePolicy", body["status"]
    assert body["spec"]["parallelism"] == 1 and "activeDeadlineSeconds" not in body["spec"], body["spec"]
    assert body["status"].get("failed") == 1, body["status"]
    time.sleep(5)  # no retry may follow
    pods = kube.pods(namespace, name)
    assert len(pods) == 1 and trainer_started(pods[0]), [p["metadata"]["name"] for p in pods]
    (state,) = [cs["state"] for cs in pods[0]["status"]["containerStatuses"] if cs["name"] == "trainer"]
    assert state["terminated"]["exitCode"] == 3, state
    status = kube.lft(namespace, name)["status"]
    assert status["attempts"] == 1 and status["attemptHistory"][0]["exitCode"] == 3, status
    report("invalid input ends the Job (podFailurePolicy)", obj["status"]["phase"], time.monotonic() - started)


def test_an_evicted_pod_costs_no_retry_and_the_run_succeeds(kube, s3, s3_endpoint, namespace):
    name = "evicted"
    res = finetune(namespace, name, s3_endpoint, max_steps=240, every_steps=40)
    res["spec"]["runPolicy"] = {"backoffLimit": 0}  # an eviction counted as a failure would end the run
    started = time.monotonic()
    kube.apply(res, namespace)
    step = wait_checkpoint(kube, namespace, name)
    running = [p for p in kube.pods(namespace, name) if p["status"].get("phase") == "Running"]
    assert len(running) == 1, [p["metadata"]["name"] for p in running]
    victim = running[0]["metadata"]["name"]
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": victim, "namespace": namespace}}
    kube.run("create", "--raw", f"/api/v1/namespaces/{namespace}/pods/{victim}/eviction", "-f", "-",
             stdin=json.dumps(eviction))
    obj = wait_phase(kube, namespace, name, "Succeeded", 480)
    status = obj["status"]
    history = status.get("attemptHistory") or []
    assert status["attempts"] == 2 and status["failedAttempts"] == 0, history
    assert history[0]["pod"] == victim and history[0]["phase"] == "Stopped", history
    # The DisruptionTarget reason, once the operator saw the pod end (PodDeleted if it was gone before).
    assert history[0].get("reason") in ("EvictionByEvictionAPI", "PodDeleted"), history
    # The status says Succeeded from the trainer's termination message; the Job controller marks the Job
    # Complete a moment later (seen: 'active': 1 right after).
    body = kube.wait_for(f"Job of {name} Complete", lambda: (
        lambda b: b if b and job_condition(b, "Complete") else None)(job(kube, namespace, name)), 60)
    assert not body["status"].get("failed"), body["status"]  # the Job controller counted no failure
    assert body["status"].get("succeeded") == 1, body["status"]
    resumed = summary(s3, namespace, name).get("resumedFromStep")
    assert resumed and resumed >= step, f"the new pod did not resume from the evicted pod's checkpoint: {resumed}"
    assert status["progress"]["step"] == 240
    report("evicted pod replaced without a retry", status["phase"], time.monotonic() - started,
           checkpoint_step_at_eviction=step, resumed_from_step=resumed)
