"""A multi-node run (training.nodes 2) against the real API server, Job controller and garbage collector:
one Indexed Job per attempt, the run's Service and NetworkPolicy, and the gang: one failed pod fails the Job
(backoffLimit 0), the Job controller stops the other rank, and the next attempt's Job starts every rank.

The tests play the kubelet (tests/support/kube.py) on the pods the real Job controller creates.
"""

from __future__ import annotations

import pytest

from lft_api.contract import ExitCode
from tests.support.kube import ApiError, kubectl_rows, wait_until
from tests.support.operator import SUCCESS, cond, is_true, spec

pytestmark = pytest.mark.integration

JOBS = "/apis/batch/v1/namespaces/{ns}/jobs"


INDEX = "batch.kubernetes.io/job-completion-index"


def attempt_jobs(kube, ns: str, name: str) -> dict[int, dict]:
    """{attempt: Job} of the run's live Jobs."""
    jobs = [j for j in kube.jobs(ns, name) if not j["metadata"].get("deletionTimestamp")]
    return {int(j["metadata"]["labels"]["finetune.dev/attempt"]): j for j in jobs}


def live_pods(kube, ns: str, name: str, attempt: int) -> list[dict]:
    return [p for p in kube.pods(ns, name) if p["metadata"]["labels"].get("finetune.dev/attempt") == str(attempt)
            and not p["metadata"].get("deletionTimestamp")]


def node_pods(kube, ns: str, name: str, attempt: int) -> dict[int, dict]:
    """{node rank (the completion index): pod} of the attempt's 2 pods."""
    def both():
        by_rank = {int(p["metadata"]["labels"][INDEX]): p for p in live_pods(kube, ns, name, attempt)}
        return by_rank if len(by_rank) == 2 else None
    return wait_until(both, 60, what=f"the 2 pods of attempt {attempt}")


def stop_deleted(kube, pods: dict[int, dict] | list[dict], code: int = int(ExitCode.PREEMPTED)) -> None:
    """The "kubelet": a deleted pod's trainer saves a checkpoint, exits, and the pod goes."""
    for pod in pods.values() if isinstance(pods, dict) else pods:
        fresh = kube.get(f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods/{pod['metadata']['name']}")
        if fresh is None:
            continue
        if fresh.get("status", {}).get("phase") not in ("Failed", "Succeeded"):
            kube.kubelet_exit(fresh, code, "")
        kube.kubelet_remove(fresh)


def start(kube, pods: dict[int, dict]) -> None:
    for pod in pods.values():
        kube.kubelet_bind(pod)
        kube.kubelet_run(pod)


def test_two_nodes_service_jobs_gang_failure_and_resume(kube, namespace, operator):
    created = kube.create_lft(namespace, "duo", spec(training={"maxSteps": 30, "nodes": 2}))
    uid = created["metadata"]["uid"]
    status = kube.wait_lft(namespace, "duo", lambda s: s.get("attempts") == 1 and is_true(s, "Accepted"))["status"]
    assert status["nodes"] == 2

    svc = wait_until(lambda: kube.get(f"/api/v1/namespaces/{namespace}/services/duo-trainer"), 20, what="Service")
    service_ip = svc["spec"]["clusterIP"]
    assert service_ip not in ("", "None") and svc["metadata"]["ownerReferences"][0]["uid"] == uid
    assert svc["spec"]["selector"][INDEX] == "0" and svc["spec"]["selector"]["finetune.dev/name"] == "duo"
    jobs = wait_until(lambda: attempt_jobs(kube, namespace, "duo") or None, 20, what="the Job of attempt 1")
    assert list(jobs) == [1] and jobs[1]["metadata"]["name"] == "duo-trainer-a1"
    assert kube.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/duo-trainer") is None  # no single-pod Job
    job = jobs[1]
    js = job["spec"]
    assert js["completionMode"] == "Indexed" and js["completions"] == 2 == js["parallelism"]
    assert js["backoffLimit"] == 0 and job["metadata"]["ownerReferences"][0]["uid"] == uid
    assert js["podFailurePolicy"]["rules"][0]["action"] == "FailJob"
    env = {e["name"]: e for e in js["template"]["spec"]["containers"][0]["env"]}
    assert env["LFT_NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == f"metadata.annotations['{INDEX}']"
    assert env["LFT_MASTER_ADDR"]["value"] == service_ip  # the IP the API server gave

    first = node_pods(kube, namespace, "duo", 1)
    kube.kubelet_bind(first[0])
    kube.kubelet_run(first[0])
    status = kube.wait_lft(namespace, "duo", lambda s: s.get("readyNodes") == 1)["status"]
    assert status["phase"] == "Pending" and "1/2 nodes running" in status["message"]
    (wide,) = kubectl_rows(kube, namespace, "-o", "wide")  # the Nodes column: ready/total, -o wide only
    assert wide["NODES"] == "1/2" and "NODES" not in kubectl_rows(kube, namespace)[0]
    kube.kubelet_bind(first[1])
    kube.kubelet_run(first[1])
    kube.wait_lft(namespace, "duo", lambda s: s.get("phase") == "Running" and s.get("readyNodes") == 2)

    # Node 1 fails: the Job fails (backoffLimit 0) and its controller stops node 0 (SIGTERM: a checkpoint).
    kube.kubelet_exit(first[1], 1, "RuntimeError: NCCL communicator aborted")
    status = kube.wait_lft(namespace, "duo", lambda s: s.get("failedAttempts") == 1)["status"]
    assert "Attempt 1 ended" in status["message"] and "NCCL communicator aborted" in status["message"]
    wait_until(lambda: (kube.get(f"/api/v1/namespaces/{namespace}/pods/{first[0]['metadata']['name']}") or {})
               .get("metadata", {}).get("deletionTimestamp"), 30, what="the Job controller stopping node 0")
    assert kube.lft(namespace, "duo")["status"]["attempts"] == 1  # no new attempt while a pod is left
    stop_deleted(kube, first)

    # Attempt 2: every node again (each resumes from the newest checkpoint), then rank 0's result.
    status = kube.wait_lft(namespace, "duo", lambda s: s.get("attempts") == 2)["status"]
    assert status["failedAttempts"] == 1
    second = node_pods(kube, namespace, "duo", 2)
    start(kube, second)
    kube.wait_lft(namespace, "duo", lambda s: s.get("phase") == "Running" and s.get("readyNodes") == 2)
    kube.kubelet_exit(second[1], 0, "")
    kube.kubelet_exit(second[0], 0, SUCCESS)
    status = kube.wait_lft(namespace, "duo", lambda s: s.get("phase") == "Succeeded")["status"]
    assert status["adapter"]["uri"] == "s3://lft-out/run/adapter" and status["attempts"] == 2
    history = {a["attempt"]: a for a in status["attemptHistory"]}
    assert history[1]["phase"] == "Failed" and history[1]["exitCode"] == 1 and history[2]["phase"] == "Succeeded"
    # Both attempts' Jobs stay (logs, until their ttlSecondsAfterFinished): nothing was deleted.
    assert sorted(attempt_jobs(kube, namespace, "duo")) == [1, 2]
    failed = kube.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/duo-trainer-a1")
    assert any(c["type"] == "Failed" and c["status"] == "True" for c in failed["status"]["conditions"])
    wait_until(lambda: {"Retrying", "Succeeded"} <= set(kube.event_reasons(namespace, "duo")), 10)


def test_the_run_gets_a_network_policy_that_admits_only_its_own_pods(kube, namespace, operator):
    """The NetworkPolicy is stored with the right selectors and owner. The test cluster has no network plugin
    that enforces NetworkPolicies (neither do many others): whether traffic is refused is not checked here."""
    created = kube.create_lft(namespace, "fence", spec(training={"maxSteps": 30, "nodes": 2}))
    uid = created["metadata"]["uid"]
    policy = wait_until(
        lambda: kube.get(f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/fence-trainer"), 20,
        what="NetworkPolicy")
    owners = policy["metadata"]["ownerReferences"]
    assert [(o["kind"], o["name"], o["uid"], o.get("controller")) for o in owners] == [
        ("LoRAFineTune", "fence", uid, True)]
    svc = kube.get(f"/api/v1/namespaces/{namespace}/services/fence-trainer")
    assert svc is not None and svc["metadata"]["ownerReferences"] == owners  # owned as the Service is
    pol = policy["spec"]
    assert pol["policyTypes"] == ["Ingress"]
    selector = pol["podSelector"]
    assert selector == {"matchLabels": {"finetune.dev/name": "fence", "app.kubernetes.io/component": "trainer"}}
    (rule,) = pol["ingress"]
    assert rule["from"] == [{"podSelector": selector}]  # same run, this namespace: no namespaceSelector, no ipBlock
    assert rule["ports"] == [{"protocol": "TCP"}]  # every TCP port: rendezvous 29500 and the ranks' ephemeral ones
    # It selects the pods the real Job controller created for both nodes, and created before any of them.
    pods = node_pods(kube, namespace, "fence", 1)
    for pod in pods.values():
        labels = pod["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in selector["matchLabels"].items()), labels
    stamped = policy["metadata"]["creationTimestamp"]
    assert all(stamped <= j["metadata"]["creationTimestamp"] for j in attempt_jobs(kube, namespace, "fence").values())


def test_suspend_is_the_jobs_own_and_resume_restarts_every_node(kube, namespace, operator):
    kube.create_lft(namespace, "pause", spec(training={"maxSteps": 30, "nodes": 2}))
    first = node_pods(kube, namespace, "pause", 1)
    start(kube, first)
    kube.wait_lft(namespace, "pause", lambda s: s.get("readyNodes") == 2)
    kube.merge_patch(kube.lft_path(namespace, "pause"), {"spec": {"suspend": True}})
    wait_until(lambda: kube.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/pause-trainer-a1")["spec"].get("suspend"),
               30, what="the Job suspended")
    wait_until(lambda: all(p["metadata"].get("deletionTimestamp") for p in kube.pods(namespace, "pause")), 30,
               what="the Job controller deleting the pods")
    stop_deleted(kube, first)
    status = kube.wait_lft(namespace, "pause", lambda s: s.get("phase") == "Suspended")["status"]
    assert status["failedAttempts"] == 0 and is_true(status, "Suspended")
    job = kube.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/pause-trainer-a1")
    assert not job["status"].get("failed")  # pods stopped by a suspend are no failure (backoffLimit 0 holds)
    kube.merge_patch(kube.lft_path(namespace, "pause"), {"spec": {"suspend": False}})
    again = node_pods(kube, namespace, "pause", 1)  # the same Job starts both ranks anew
    assert set(p["metadata"]["name"] for p in again.values()).isdisjoint(p["metadata"]["name"] for p in first.values())
    start(kube, again)
    status = kube.wait_lft(namespace, "pause", lambda s: s.get("phase") == "Running" and s.get("readyNodes") == 2)[
        "status"]
    assert status["failedAttempts"] == 0 and status["attempts"] == 1 and not is_true(status, "Suspended")
    assert list(attempt_jobs(kube, namespace, "pause")) == [1]


def test_a_node_whose_pod_cannot_be_created_is_reported_then_times_out(kube, namespace, operator):
    """A ResourceQuota that admits one pod: the real Job controller creates one rank's pod and posts FailedCreate
    on the Job. The run says which Job and the quota's message; after the operator's pod-creation timeout (20 s in
    these tests) it fails, PodCreationTimeout, and the Job is stopped (a past activeDeadlineSeconds)."""
    kube.quota(namespace, {"pods": "1"})
    kube.create_lft(namespace, "tight", spec(training={"maxSteps": 30, "nodes": 2}))
    status = kube.wait_lft(namespace, "tight", lambda s: cond(s, "Running").get("reason") == "PodCreationFailed",
                           timeout=30)["status"]
    pods = [p for p in kube.pods(namespace, "tight") if p["metadata"]["labels"].get("finetune.dev/attempt") == "1"]
    assert len(pods) == 1  # the quota admitted one
    assert status["phase"] == "Pending" and "exceeded quota" in status["message"]
    assert "cannot create the trainer pods (Job tight-trainer-a1)" in status["message"]
    assert cond(status, "Running")["message"] == status["message"]
    warned = wait_until(lambda: [e for e in kube.events(namespace, "tight") if e["reason"] == "PodCreationFailed"], 10)
    assert warned[0]["type"] == "Warning" and "tight-trainer-a1" in warned[0]["message"]

    status = kube.wait_lft(namespace, "tight", lambda s: s.get("phase") == "Failed", timeout=60)["status"]
    assert cond(status, "Failed")["reason"] == "PodCreationTimeout" and "exceeded quota" in status["message"]
    assert status["message"].startswith("Job tight-trainer-a1: No trainer pod could be")
    job_path = f"/apis/batch/v1/namespaces/{namespace}/jobs/tight-trainer-a1"
    wait_until(lambda: kube.get(job_path)["spec"].get("activeDeadlineSeconds") == 1, 30, what="the Job stopped")
    wait_until(lambda: any(c["reason"] == "DeadlineExceeded" for c in kube.get(job_path)["status"].get("conditions", [])),
               30, what="the Job controller ending the Job")
    wait_until(lambda: "PodCreationTimeout" in kube.event_reasons(namespace, "tight"), 10)


def test_a_changed_node_count_is_refused_at_apply_and_neither_path_is_touched(kube, namespace, operator):
    """training.nodes edited while a run trains: the API server refuses it (the CRD's immutability rule)."""
    kube.create_lft(namespace, "solo", spec(training={"maxSteps": 30}))
    pod = kube.wait_for_pod(namespace, "solo")
    kube.kubelet_bind(pod)
    kube.kubelet_run(pod)
    kube.wait_lft(namespace, "solo", lambda s: s.get("phase") == "Running")
    with pytest.raises(ApiError) as refused:
        kube.merge_patch(kube.lft_path(namespace, "solo"), {"spec": {"training": {"nodes": 2}}})
    assert refused.value.status == 422 and "spec.training cannot change" in refused.value.message
    assert [j["metadata"]["name"] for j in kube.jobs(namespace, "solo")] == ["solo-trainer"]  # no Indexed Job
    assert len(kube.pods(namespace, "solo")) == 1

    kube.create_lft(namespace, "duo", spec(training={"maxSteps": 30, "nodes": 2}))
    start(kube, node_pods(kube, namespace, "duo", 1))
    kube.wait_lft(namespace, "duo", lambda s: s.get("phase") == "Running" and s.get("readyNodes") == 2)
    with pytest.raises(ApiError) as refused:
        kube.merge_patch(kube.lft_path(namespace, "duo"), {"spec": {"training": {"nodes": 3}}})
    assert refused.value.status == 422 and "spec.training cannot change" in refused.value.message
    status = kube.lft(namespace, "duo")["status"]
    assert status["phase"] == "Running" and status["nodes"] == 2
    (job,) = attempt_jobs(kube, namespace, "duo").values()
    assert job["spec"]["completions"] == 2
