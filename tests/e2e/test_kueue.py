"""End-to-end with a real Kueue (v0.17.0, tests/cluster/kueue-up.sh) and the operator's Kueue integration on
(the chart's kueue.enabled: hack/deploy.sh with LFT_KUEUE=1). hack/test-all.sh runs this file as its own suite
after the other e2e scenarios (which ignore it); without Kueue it skips, or fails with LFT_REQUIRE_KUEUE=1.

1. A ClusterQueue with quota for one run, two runs: the second is Pending, Queued, with Kueue's quota message,
   no pod of it starts while the first runs; it runs after the first, and both succeed.
2. A higher-priority run (WorkloadPriorityClass) preempts a running lower-priority one: the lower one shows
   Suspended, Preempted, with Kueue's message; later it is admitted again, resumes from its checkpoint (no more
   than the steps since it lost) and succeeds with the full step count.
3. A two-node run under a quota that fits one pod stays wholly queued: no pod of it starts.
4. A run without a queue in a namespace without a default LocalQueue behaves as today (no Workload, no queue).
5. A run without a queue in a namespace whose LocalQueue is named "default" is queued there (Kueue's webhook sets
   the queue label; the operator reads it back).

Each run asks for half a CPU and 2Gi (the node has 2 cores); the ClusterQueues count cpu and memory.

The scenarios print the latencies a user meets ("kueue timing: ..."), from the API server's own timestamps (one
second resolution): apply to Queued, apply to admission, quota freed to admission, and preemption to running again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest

from tests.support.scenarios import condition, finetune, summary, wait_checkpoint, wait_phase

pytestmark = [pytest.mark.e2e, pytest.mark.kueue]

KUEUE_API = "kueue.x-k8s.io/v1beta2"
FLAVOR = "lft-e2e"
NAMESPACE_LABEL = os.environ.get("KUEUE_NAMESPACE_LABEL", "kueue.lft.dev/enabled")  # tests/cluster/lib/kueue.sh
CPU, MEMORY = "500m", "2Gi"  # one run's trainer pod


@pytest.fixture(scope="module")
def kueue(kube):
    """Kueue is running (its webhook configurations are there) and the operator's integration is on."""
    why = None
    if kube.run("get", "crd", "workloads.kueue.x-k8s.io", check=False).returncode != 0:
        why = "Kueue's CRDs are not installed (make kueue-up)"
    elif kube.run("get", "mutatingwebhookconfiguration", "lft-kueue-mutating", check=False).returncode != 0:
        why = "Kueue is not running (make kueue-up)"
    else:
        deploy = kube.json("get", "deploy", "-n", "lft-system", "-l", "app.kubernetes.io/name=lora-finetune-operator")
        env = {e["name"]: e.get("value") for d in deploy["items"]
               for e in d["spec"]["template"]["spec"]["containers"][0].get("env", [])}
        if env.get("LFT_KUEUE") != "true":
            why = "the operator runs without its Kueue integration (LFT_KUEUE=1 hack/deploy.sh)"
    if why is not None:
        if os.environ.get("LFT_REQUIRE_KUEUE") == "1":
            pytest.fail(why)
        pytest.skip(why)
    kube.run("apply", "-f", "-", stdin=json.dumps(
        {"apiVersion": KUEUE_API, "kind": "ResourceFlavor", "metadata": {"name": FLAVOR}}))
    return kube


def cluster_queue(name: str, cpu: str = CPU, memory: str = MEMORY, preemption: bool = False) -> dict:
    spec: dict = {
        "namespaceSelector": {},
        "queueingStrategy": "BestEffortFIFO",
        "resourceGroups": [{"coveredResources": ["cpu", "memory"], "flavors": [{"name": FLAVOR, "resources": [
            {"name": "cpu", "nominalQuota": cpu}, {"name": "memory", "nominalQuota": memory}]}]}],
    }
    if preemption:
        spec["preemption"] = {"withinClusterQueue": "LowerPriority"}
    return {"apiVersion": KUEUE_API, "kind": "ClusterQueue", "metadata": {"name": name}, "spec": spec}


@pytest.fixture
def queues(kueue, namespace) -> Iterator:
    """make(cluster_queue, local_queue_name): a ClusterQueue and a LocalQueue of this scenario's namespace (which
    goes through Kueue's Job webhook: labelled); removed afterwards, with any WorkloadPriorityClass made."""
    kueue.run("label", "namespace", namespace, f"{NAMESPACE_LABEL}=true", "--overwrite")
    made: list[tuple[str, str]] = []

    def make(cq: dict, local: str = "team") -> str:
        kueue.run("apply", "-f", "-", stdin=json.dumps(cq))
        made.append(("clusterqueue", cq["metadata"]["name"]))
        kueue.apply({"apiVersion": KUEUE_API, "kind": "LocalQueue", "metadata": {"name": local},
                     "spec": {"clusterQueue": cq["metadata"]["name"]}}, namespace)
        return local

    def priority(name: str, value: int) -> str:
        kueue.run("apply", "-f", "-", stdin=json.dumps(
            {"apiVersion": KUEUE_API, "kind": "WorkloadPriorityClass", "metadata": {"name": name}, "value": value}))
        made.append(("workloadpriorityclass", name))
        return name

    make.priority = priority  # type: ignore[attr-defined]
    yield make
    for kind, name in reversed(made):
        kueue.run("delete", kind, name, "--wait=false", "--ignore-not-found", check=False)


def run(namespace: str, name: str, endpoint: str, queue: str | None, steps: int = 60, every: int = 20,
        priority: str | None = None, nodes: int = 1) -> dict:
    res = finetune(namespace, name, endpoint, max_steps=steps, every_steps=every)
    res["spec"]["resources"].update(cpu=CPU, memory=MEMORY)
    if queue:
        res["spec"]["queueName"] = queue
    if priority:
        res["spec"].setdefault("podTemplate", {}).setdefault("labels", {})["kueue.x-k8s.io/priority-class"] = priority
    if nodes > 1:
        res["spec"]["training"]["nodes"] = nodes
    return res


def queued(kube, namespace: str, name: str, timeout: float = 90) -> dict:
    """Wait until the run reads Pending, Running=False reason Queued."""
    def check():
        obj = kube.lft(namespace, name)
        ok = obj.get("status", {}).get("phase") == "Pending" and condition(obj, "Running").get("reason") == "Queued"
        return obj if ok else None
    return kube.wait_for(f"{name} Queued", check, timeout)


def at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def since(start: str, end: str) -> float:
    return (at(end) - at(start)).total_seconds()


def workload_of(kube, namespace: str, name: str) -> dict:
    """The run's Workload: Kueue's, owned by the run's Job."""
    for wl in workloads(kube, namespace):
        if any(o["name"].startswith(f"{name}-trainer") for o in wl["metadata"].get("ownerReferences", [])):
            return wl
    raise AssertionError(f"no Workload of {name} in {namespace}")


def first_event(kube, namespace: str, name: str, reason: str) -> str:
    stamps = [e.get("firstTimestamp") or e["eventTime"] for e in kube.events(namespace, name) if e["reason"] == reason]
    assert stamps, f"no {reason} event for {name}"
    return min(stamps, key=at)


@pytest.fixture
def timing(capsys, request) -> Callable[..., None]:
    """Print a measured latency (or count) into the test log, past pytest's capture."""
    def report(what: str, value: float, unit: str = "s") -> None:
        assert value >= 0, (what, value)
        with capsys.disabled():
            print(f"\nkueue timing [{request.node.name}]: {what}: {value:.0f} {unit}", flush=True)
    return report


def started_pods(kube, namespace: str, name: str) -> list[str]:
    return [p["metadata"]["name"] for p in kube.pods(namespace, name)]


def workloads(kube, namespace: str) -> list[dict]:
    return kube.json("get", "workloads.v1beta2.kueue.x-k8s.io", "-n", namespace)["items"]


def test_second_run_queued_on_quota_then_both_succeed(kube, s3, s3_endpoint, namespace, queues, timing):
    local = queues(cluster_queue("lft-e2e-one"))
    kube.apply(run(namespace, "first", s3_endpoint, local, steps=120), namespace)
    wait_phase(kube, namespace, "first", "Running", 180)
    kube.apply(run(namespace, "second", s3_endpoint, local), namespace)
    obj = queued(kube, namespace, "second")
    message = obj["status"]["message"]
    # Kueue's own words, e.g. "insufficient unused quota for cpu in flavor lft-e2e, 500m more needed".
    assert f"LocalQueue {local}" in message and "insufficient" in message and FLAVOR in message, message
    assert obj["status"]["queue"]["state"] == "Queued" and obj["status"]["queue"]["name"] == local, obj["status"]
    job = kube.json("get", "job", "second-trainer", "-n", namespace)
    assert job["spec"]["suspend"] is True and job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == local
    assert not started_pods(kube, namespace, "second")
    wide = kube.run("get", "lft", "second", "-n", namespace, "-o", "wide").stdout
    assert f"Queued ({local})" in wide, wide

    first = wait_phase(kube, namespace, "first", "Succeeded", 480)
    second = wait_phase(kube, namespace, "second", "Succeeded", 480)
    # The second started only once the first had finished (its quota freed).
    assert second["status"]["startTime"] >= first["status"]["completionTime"], (first["status"], second["status"])
    assert second["status"]["attempts"] == 1 and second["status"]["queue"]["state"] in ("Admitted", "Finished")
    assert "Queued" in {e["reason"] for e in kube.events(namespace, "second")}

    created = {n: o["metadata"]["creationTimestamp"] for n, o in (("first", first), ("second", second))}
    admitted = {n: condition(workload_of(kube, namespace, n), "Admitted")["lastTransitionTime"] for n in created}
    timing("apply to admission, quota free", since(created["first"], admitted["first"]))
    timing("apply to Queued in the status, quota taken", since(created["second"], first_event(
        kube, namespace, "second", "Queued")))
    timing("quota freed (first run complete) to admission of the queued run",
           since(first["status"]["completionTime"], admitted["second"]))


def test_higher_priority_preempts_lower_which_resumes_from_its_checkpoint(kube, s3, s3_endpoint, namespace, queues,
                                                                         timing):
    local = queues(cluster_queue("lft-e2e-prio", preemption=True))
    low, high = queues.priority("lft-e2e-low", 100), queues.priority("lft-e2e-high", 1000)
    kube.apply(run(namespace, "low", s3_endpoint, local, steps=400, every=20, priority=low), namespace)
    wait_checkpoint(kube, namespace, "low", timeout=300)
    # Long enough that the low run is still waiting when it is checked (40 steps ended before its pod did).
    kube.apply(run(namespace, "high", s3_endpoint, local, steps=300, priority=high), namespace)

    def preempted():
        obj = kube.lft(namespace, "low")
        cond = condition(obj, "Suspended")
        return obj if cond.get("status") == "True" and cond.get("reason") == "Preempted" else None

    obj = kube.wait_for("low Preempted", preempted, 180)
    at_preemption = obj["status"].get("latestCheckpoint", {}).get("step", 0)
    step_at_preemption = obj["status"].get("progress", {}).get("step", 0)
    assert "Preempted by Kueue" in condition(obj, "Suspended")["message"], condition(obj, "Suspended")
    kube.wait_for("low's trainer pod gone", lambda: not [
        p for p in kube.pods(namespace, "low") if p["status"].get("phase") in ("Pending", "Running")
        and not p["metadata"].get("deletionTimestamp")], 180)
    # The operator sees the pod gone a moment after the API server does (its watch).
    obj = kube.wait_for("low Suspended", lambda: (lambda o: o if o["status"]["phase"] == "Suspended" else None)(
        kube.lft(namespace, "low")), 30)
    assert obj["status"]["queue"]["state"] == "Preempted"

    high_done = wait_phase(kube, namespace, "high", "Succeeded", 300)
    low_again = kube.wait_for("low Running again", lambda: (lambda o: o if condition(o, "Running").get(
        "reason") == "TrainerRunning" else None)(kube.lft(namespace, "low")), 300)
    done = wait_phase(kube, namespace, "low", "Succeeded", 600)
    assert done["status"]["progress"]["step"] == 400
    resumed = summary(s3, namespace, "low").get("resumedFromStep")
    # It resumed from its newest checkpoint: at most the steps since it were lost.
    assert resumed and resumed >= at_preemption > 0, (resumed, at_preemption)
    reasons = {e["reason"] for e in kube.events(namespace, "low")}
    assert {"Preempted", "Resumed"} <= reasons, reasons
    assert done["status"]["failedAttempts"] == 0, done["status"].get("attemptHistory")  # preemption is no failure

    high_created = kube.lft(namespace, "high")["metadata"]["creationTimestamp"]
    readmitted = condition(workload_of(kube, namespace, "low"), "Admitted")["lastTransitionTime"]
    timing("high-priority apply to Preempted in the low run's status", since(high_created, first_event(
        kube, namespace, "low", "Preempted")))
    timing("quota freed (high run complete) to readmission of the low run",
           since(high_done["status"]["completionTime"], readmitted))
    timing("readmission to the low run's new trainer pod (Running=True: its pod exists)",
           since(readmitted, condition(low_again, "Running")["lastTransitionTime"]))
    timing(f"steps lost to preemption (step {step_at_preemption}, resumed from {resumed})",
           max(step_at_preemption - resumed, 0), "steps")


def test_two_node_run_under_quota_for_one_pod_stays_wholly_queued(kube, s3, s3_endpoint, namespace, queues):
    local = queues(cluster_queue("lft-e2e-onepod"))
    kube.apply(run(namespace, "duo", s3_endpoint, local, nodes=2), namespace)
    obj = queued(kube, namespace, "duo")
    assert "insufficient quota" in obj["status"]["message"], obj["status"]["message"]  # request > capacity
    (wl,) = workloads(kube, namespace)
    assert [p["count"] for p in wl["spec"]["podSets"]] == [2], wl["spec"]["podSets"]  # one Workload, both pods
    time.sleep(20)  # nothing starts meanwhile: all or nothing
    assert not started_pods(kube, namespace, "duo")
    assert kube.json("get", "job", "duo-trainer-a1", "-n", namespace)["spec"]["suspend"] is True
    assert queued(kube, namespace, "duo", 5)["status"]["nodesDisplay"] == "0/2"
    kube.run("delete", "lft", "duo", "-n", namespace)


def test_run_without_a_queue_behaves_as_today(kube, s3, s3_endpoint, namespace, kueue):
    kube.run("label", "namespace", namespace, f"{NAMESPACE_LABEL}=true", "--overwrite")  # through the webhook
    kube.apply(run(namespace, "plain", s3_endpoint, None), namespace)
    done = wait_phase(kube, namespace, "plain", "Succeeded", 300)
    assert done["status"].get("queue") is None and done["status"]["attempts"] == 1
    job = kube.json("get", "job", "plain-trainer", "-n", namespace)
    assert "kueue.x-k8s.io/queue-name" not in job["metadata"].get("labels", {})
    assert not workloads(kube, namespace)


def test_namespace_default_local_queue_queues_a_run_without_a_queue(kube, s3, s3_endpoint, namespace, queues):
    queues(cluster_queue("lft-e2e-default"), local="default")
    kube.apply(run(namespace, "defaulted", s3_endpoint, None), namespace)
    done = wait_phase(kube, namespace, "defaulted", "Succeeded", 300)
    job = kube.json("get", "job", "defaulted-trainer", "-n", namespace)
    assert job["metadata"]["labels"].get("kueue.x-k8s.io/queue-name") == "default"  # Kueue's webhook
    assert done["status"]["queue"]["name"] == "default", done["status"]
    assert len(workloads(kube, namespace)) == 1
