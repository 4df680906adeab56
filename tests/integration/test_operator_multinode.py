"""A multi-node run (training.nodes 2) against the real API server, Job controller and garbage collector:
one Job per node, the run's Service and NetworkPolicy, and the gang: one failed pod ends the attempt on every
node.

The tests play the kubelet (tests/support/kube.py) on the pods the real Job controller creates.
"""

from __future__ import annotations

import pytest

from lft_api.contract import ExitCode
from tests.support.kube import kubectl_rows, wait_until
from tests.support.operator import SUCCESS, cond, is_true, spec

pytestmark = pytest.mark.integration

JOBS = "/apis/batch/v1/namespaces/{ns}/jobs"


def node_jobs(kube, ns: str, name: str) -> dict[int, dict]:
    """{node rank: Job} of the run's live Jobs."""
    jobs = [j for j in kube.jobs(ns, name) if not j["metadata"].get("deletionTimestamp")]
    return {int(j["metadata"]["labels"]["finetune.dev/node-rank"]): j for j in jobs}


def node_pods(kube, ns: str, name: str, attempt: int) -> dict[int, dict]:
    def both():
        pods = [p for p in kube.pods(ns, name) if p["metadata"]["labels"].get("finetune.dev/attempt") == str(attempt)]
        by_rank = {int(p["metadata"]["labels"]["finetune.dev/node-rank"]): p for p in pods}
        return by_rank if len(by_rank) == 2 else None
    return wait_until(both, 60, what=f"the 2 pods of attempt {attempt}")


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
    assert svc["spec"]["selector"]["finetune.dev/node-rank"] == "0"
    jobs = wait_until(lambda: (j := node_jobs(kube, namespace, "duo")) and len(j) == 2 and j, 20, what="2 Jobs")
    assert kube.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/duo-trainer") is None  # no single-pod Job
    for rank, job in jobs.items():
        pod_spec = job["spec"]["template"]["spec"]
        assert pod_spec["hostname"] == f"duo-node-{rank}"
        env = {e["name"]: e.get("value") for e in pod_spec["containers"][0]["env"]}
        assert env["LFT_NODE_RANK"] == str(rank)
        assert env["LFT_MASTER_ADDR"] == ("127.0.0.1" if rank == 0 else service_ip)  # the IP the API server gave
        assert job["spec"]["backoffLimit"] == 0 and job["metadata"]["ownerReferences"][0]["uid"] == uid

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

    # Node 1 fails: the whole attempt ends, both Jobs are deleted.
    kube.kubelet_exit(first[1], 1, "RuntimeError: NCCL communicator aborted")
    status = kube.wait_lft(namespace, "duo", lambda s: s.get("failedAttempts") == 1)["status"]
    assert "Attempt 1 ended" in status["message"] and "NCCL communicator aborted" in status["message"]
    wait_until(lambda: not node_jobs(kube, namespace, "duo"), 30, what="the attempt's Jobs deleted")
    assert kube.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/duo-trainer-node-1") is None
    # The garbage collector deletes the pods; node 0 (SIGTERM) saves a checkpoint and exits preempted.
    wait_until(lambda: all(p["metadata"].get("deletionTimestamp") for p in kube.pods(namespace, "duo")
                           if p["metadata"]["labels"].get("finetune.dev/attempt") == "1"), 30, what="pods deleted")
    assert kube.lft(namespace, "duo")["status"]["attempts"] == 1  # no new attempt while a pod is left
    kube.kubelet_exit(first[0], int(ExitCode.PREEMPTED), "")
    for pod in first.values():
        kube.kubelet_remove(pod)

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
    assert len(node_jobs(kube, namespace, "duo")) == 2  # a success keeps its Jobs (logs)
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
    assert all(stamped <= j["metadata"]["creationTimestamp"] for j in node_jobs(kube, namespace, "fence").values())


def test_suspend_deletes_every_node_and_resume_starts_a_new_attempt(kube, namespace, operator):
    kube.create_lft(namespace, "pause", spec(training={"maxSteps": 30, "nodes": 2}))
    first = node_pods(kube, namespace, "pause", 1)
    start(kube, first)
    kube.wait_lft(namespace, "pause", lambda s: s.get("readyNodes") == 2)
    kube.merge_patch(kube.lft_path(namespace, "pause"), {"spec": {"suspend": True}})
    wait_until(lambda: not node_jobs(kube, namespace, "pause"), 30, what="Jobs deleted on suspend")
    for pod in first.values():
        kube.kubelet_exit(pod, int(ExitCode.PREEMPTED), "")
        kube.kubelet_remove(pod)
    status = kube.wait_lft(namespace, "pause", lambda s: s.get("phase") == "Suspended")["status"]
    assert status["failedAttempts"] == 0 and is_true(status, "Suspended")
    kube.merge_patch(kube.lft_path(namespace, "pause"), {"spec": {"suspend": False}})
    status = kube.wait_lft(namespace, "pause", lambda s: s.get("attempts") == 2)["status"]
    assert status["failedAttempts"] == 0
    assert len(node_pods(kube, namespace, "pause", 2)) == 2


def test_a_node_whose_pod_cannot_be_created_is_reported_then_times_out(kube, namespace, operator):
    """A ResourceQuota that admits one pod: the real Job controller creates one node's pod and posts FailedCreate
    on the other node's Job. The run says which node and the quota's message; after the operator's pod-creation
    timeout (20 s in these tests) it fails, PodCreationTimeout, and every Job of the attempt is deleted."""
    kube.quota(namespace, {"pods": "1"})
    kube.create_lft(namespace, "tight", spec(training={"maxSteps": 30, "nodes": 2}))
    status = kube.wait_lft(namespace, "tight", lambda s: cond(s, "Running").get("reason") == "PodCreationFailed",
                           timeout=30)["status"]
    pods = [p for p in kube.pods(namespace, "tight") if p["metadata"]["labels"].get("finetune.dev/attempt") == "1"]
    assert len(pods) == 1  # the quota admitted one
    stuck = 1 - int(pods[0]["metadata"]["labels"]["finetune.dev/node-rank"])
    assert status["phase"] == "Pending" and "exceeded quota" in status["message"]
    assert f"node {stuck} (Job tight-trainer-node-{stuck})" in status["message"]
    assert cond(status, "Running")["message"] == status["message"]
    warned = wait_until(lambda: [e for e in kube.events(namespace, "tight") if e["reason"] == "PodCreationFailed"], 10)
    assert warned[0]["type"] == "Warning" and f"node {stuck}" in warned[0]["message"]

    status = kube.wait_lft(namespace, "tight", lambda s: s.get("phase") == "Failed", timeout=60)["status"]
    assert cond(status, "Failed")["reason"] == "PodCreationTimeout" and "exceeded quota" in status["message"]
    assert status["message"].startswith(f"Node {stuck} (Job tight-trainer-node-{stuck}): No trainer pod could be")
    wait_until(lambda: not node_jobs(kube, namespace, "tight"), 30, what="the attempt's Jobs deleted")
    wait_until(lambda: "PodCreationTimeout" in kube.event_reasons(namespace, "tight"), 10)


def test_a_changed_node_count_is_reported_and_neither_path_is_torn_down(kube, namespace, operator):
    """training.nodes edited while a run trains: the running Jobs stay, no Job is added, SpecChangeIgnored says so."""
    kube.create_lft(namespace, "solo", spec(training={"maxSteps": 30}))
    pod = kube.wait_for_pod(namespace, "solo")
    kube.kubelet_bind(pod)
    kube.kubelet_run(pod)
    kube.wait_lft(namespace, "solo", lambda s: s.get("phase") == "Running")
    kube.merge_patch(kube.lft_path(namespace, "solo"), {"spec": {"training": {"nodes": 2}}})
    status = kube.wait_lft(namespace, "solo", lambda s: is_true(s, "SpecChangeIgnored"))["status"]
    assert "spec.training.nodes changed after Job solo-trainer was created" in cond(status, "SpecChangeIgnored")["message"]
    assert status["phase"] == "Running" and kube.job(namespace, "solo") is not None
    assert [j["metadata"]["name"] for j in kube.jobs(namespace, "solo")] == ["solo-trainer"]  # no node Jobs
    assert len(kube.pods(namespace, "solo")) == 1

    kube.create_lft(namespace, "duo", spec(training={"maxSteps": 30, "nodes": 2}))
    start(kube, node_pods(kube, namespace, "duo", 1))
    kube.wait_lft(namespace, "duo", lambda s: s.get("phase") == "Running" and s.get("readyNodes") == 2)
    kube.merge_patch(kube.lft_path(namespace, "duo"), {"spec": {"training": {"nodes": 3}}})
    status = kube.wait_lft(namespace, "duo", lambda s: is_true(s, "SpecChangeIgnored"))["status"]
    assert "spec.training.nodes changed after the run started" in cond(status, "SpecChangeIgnored")["message"]
    assert status["phase"] == "Running" and status["nodes"] == 2 and "2/2 nodes" in status["message"]
    assert sorted(node_jobs(kube, namespace, "duo")) == [0, 1]
    wait_until(lambda: "SpecChangeIgnored" in kube.event_reasons(namespace, "duo"), 10)
