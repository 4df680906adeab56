"""End-to-end on the kind cluster (docs/kind.md): a real node fault. A two-node run spreads its pods over
the two workers; the worker of rank 1 is stopped (`docker stop`, its kubelet, containerd and pods gone at once),
then started again. The attempt ends, the next one resumes every rank from the newest checkpoint, and the run
ends Succeeded with the full step count; the status says what interrupted it."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from tests.support.scenarios import finetune, summary, wait_checkpoint, wait_phase

pytestmark = pytest.mark.e2e

INDEX = "batch.kubernetes.io/job-completion-index"
DOCKER = os.environ.get("DOCKER", "docker")


def docker(*args: str) -> str:
    return subprocess.run([DOCKER, *args], check=True, capture_output=True, text=True, timeout=120).stdout


@pytest.fixture
def kind_workers(kube) -> list[str]:
    nodes = kube.json("get", "nodes")["items"]
    workers = [n["metadata"]["name"] for n in nodes if "node-role.kubernetes.io/control-plane" not in n["metadata"]["labels"]]
    if len(workers) < 2:
        pytest.fail(f"needs the kind cluster of hack/kind/up.sh (two workers): {workers}")
    return workers


def test_a_stopped_worker_ends_the_attempt_and_the_run_resumes_to_succeeded(kube, s3, s3_endpoint, namespace,
                                                                               kind_workers):
    name = "nodefault"
    res = finetune(namespace, name, s3_endpoint, max_steps=120, every_steps=20)
    res["spec"]["training"]["nodes"] = 2
    res["spec"]["resources"]["cpu"] = "500m"
    kube.apply(res, namespace)
    assert wait_checkpoint(kube, namespace, name, timeout=420) > 0
    running = [p for p in kube.pods(namespace, name) if p["status"].get("phase") == "Running"]
    placed = {p["metadata"]["labels"][INDEX]: p["spec"]["nodeName"] for p in running}
    # The attempt's pods spread over both workers (topologySpreadConstraints of multinode.job).
    assert sorted(placed.values()) == sorted(kind_workers), placed
    victim = placed["1"]
    stopped_at = time.monotonic()
    docker("stop", victim)
    try:
        # The node stops reporting: the node controller marks it NotReady (node-monitor-grace-period).
        kube.wait_for(f"{victim} NotReady", lambda: not node_ready(kube, victim), 180)
        explained = kube.wait_for("the status names the lost node", lambda: lost_node_message(kube, namespace, name, victim), 120)
        print(f"node {victim} stopped; NotReady and explained after {time.monotonic() - stopped_at:.0f} s: {explained}")
    finally:
        docker("start", victim)
    obj = wait_phase(kube, namespace, name, "Succeeded", 900)
    assert obj["status"]["progress"]["step"] == 120
    assert obj["status"]["attempts"] >= 2, obj["status"].get("attemptHistory")
    # The outage, named with the machine (the Warning Event NodeUnreachable; lft-worker2 is not lft-worker).
    messages = {e["reason"]: e["message"] for e in kube.events(namespace, name)}
    assert names(victim, messages.get("NodeUnreachable", "")), messages
    resumed = summary(s3, namespace, name).get("resumedFromStep")
    assert resumed and resumed > 0, f"the next attempt did not resume from a checkpoint: {resumed}"


def node_ready(kube, node: str) -> bool:
    conditions = kube.json("get", "node", node)["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def names(node: str, text: str) -> bool:
    return re.search(rf"\b{re.escape(node)}\b", text) is not None


def lost_node_message(kube, namespace: str, name: str, node: str) -> str | None:
    message = kube.lft(namespace, name).get("status", {}).get("message", "")
    return message if names(node, message) and "stopped reporting" in message else None
