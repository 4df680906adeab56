"""End-to-end: one LoRAFineTune across two pods (training.nodes: 2), on the real cluster with the CPU trainer
image: one Indexed Job per attempt (the pod's completion index is its node rank), torchrun in each pod, gloo
over the pod network, the master reached at the run's Service IP (works with or without cluster DNS). It
trains to Succeeded with one adapter, written by rank 0; with 2 processes per pod, four ranks train on four
distinct shards; a pod killed on one rank fails the attempt's Job and the next attempt resumes every rank."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.faults import report
from tests.support.scenarios import finetune, summary, wait_checkpoint, wait_phase

pytestmark = pytest.mark.e2e

INDEX = "batch.kubernetes.io/job-completion-index"


def run_jobs(kube, namespace: str, name: str) -> dict[str, dict]:
    """{attempt: Job} of the run."""
    jobs = json.loads(kube.run("get", "jobs", "-n", namespace, "-l", f"finetune.dev/name={name}", "-o", "json").stdout)
    return {j["metadata"]["labels"]["finetune.dev/attempt"]: j for j in jobs["items"]}


def test_two_pods_train_one_run_to_succeeded(kube, s3, s3_endpoint, namespace):
    name, t0 = "duo", time.monotonic()
    res = finetune(namespace, name, s3_endpoint, max_steps=20, every_steps=10)
    res["spec"]["training"]["nodes"] = 2
    res["spec"]["resources"]["cpu"] = "500m"  # two trainer pods on the one 2-core node
    kube.apply(res, namespace)
    done = wait_phase(kube, namespace, name, "Succeeded", 600)
    assert done["status"]["nodes"] == 2 and done["status"]["attempts"] == 1, done["status"]

    s = summary(s3, namespace, name)
    assert (s["nodes"], s["processesPerNode"], s["worldSize"]) == (2, 1, 2), {k: s.get(k) for k in ("nodes", "worldSize")}
    assert s["steps"] == 20
    losses = [h["loss"] for h in s.get("logHistory", []) if "loss" in h]
    assert losses and losses[-1] < losses[0], losses
    # Both nodes ran and ended: one Indexed Job, both indexes succeeded (the run is Succeeded once rank 0 has
    # written the result; the other node's pod may take a moment more to exit); the master was the Service's IP.
    def complete() -> dict | None:
        jobs = run_jobs(kube, namespace, name)
        job = jobs.get("1")
        return job if list(jobs) == ["1"] and job["status"].get("succeeded") == 2 else None

    job = kube.wait_for("the Indexed Job Complete", complete, 60)
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2, job["spec"]
    assert job["status"].get("completedIndexes") == "0,1", job["status"]
    svc = json.loads(kube.run("get", "service", f"{name}-trainer", "-n", namespace, "-o", "json").stdout)
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LFT_MASTER_ADDR"]["value"] == svc["spec"]["clusterIP"]
    assert env["LFT_NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == f"metadata.annotations['{INDEX}']"

    # The loss drops like a one-pod run's on the same data and steps: the eval loss after training within 25%
    # of the one-pod run's drop (two ranks see twice the rows per step, so close, not equal).
    solo = finetune(namespace, "solo", s3_endpoint, max_steps=20, every_steps=10)
    solo["spec"]["resources"]["cpu"] = "500m"
    kube.apply(solo, namespace)
    wait_phase(kube, namespace, "solo", "Succeeded", 600)
    one = summary(s3, namespace, "solo")["metrics"]
    before, after_one, after_two = one["evalLossBefore"], one["evalLossAfter"], s["metrics"]["evalLossAfter"]
    assert s["metrics"]["evalLossBefore"] == pytest.approx(before, rel=5e-3)
    assert after_one < before and abs(after_two - after_one) < 0.25 * (before - after_one), (before, after_one,
                                                                                             after_two)
    report("two pods vs one, same data and steps", "Succeeded", time.monotonic() - t0,
           eval_loss_before=f"{before:.4f}", one_pod_after=f"{after_one:.4f}", two_pods_after=f"{after_two:.4f}")


def test_two_pods_of_two_processes_train_on_four_distinct_shards(kube, s3, s3_endpoint, namespace):
    name = "quad"
    res = finetune(namespace, name, s3_endpoint, max_steps=20, every_steps=10)
    res["spec"]["training"].update(nodes=2, numProcesses=2)
    res["spec"]["resources"]["cpu"] = "500m"
    kube.apply(res, namespace)
    done = wait_phase(kube, namespace, name, "Succeeded", 600)
    assert done["status"]["attempts"] == 1, done["status"]
    s = summary(s3, namespace, name)
    assert (s["nodes"], s["processesPerNode"], s["worldSize"], s["steps"]) == (2, 2, 4, 20)
    losses = [h["loss"] for h in s.get("logHistory", []) if "loss" in h]
    assert losses and losses[-1] < losses[0], losses
    # Every rank trained on its own rows: four different shards whose union is much more than any one of them
    # (the example file repeats rows, so a few identical rows on two ranks are expected; the same shard on
    # every rank would make the union no larger than one shard).
    shards = s["dataShards"]
    assert [r["rank"] for r in shards["ranks"]] == [0, 1, 2, 3] and all(r["rows"] > 0 for r in shards["ranks"]), shards
    assert len({r["digest"] for r in shards["ranks"]}) == 4, shards
    assert shards["distinctRows"] > 2 * max(r["distinctRows"] for r in shards["ranks"]), shards


def test_one_pod_killed_ends_the_attempt_and_every_rank_resumes(kube, s3, s3_endpoint, namespace):
    name = "duokill"
    res = finetune(namespace, name, s3_endpoint, max_steps=300, every_steps=20)
    res["spec"]["training"]["nodes"] = 2
    res["spec"]["resources"]["cpu"] = "500m"
    kube.apply(res, namespace)
    assert wait_checkpoint(kube, namespace, name, timeout=300) > 0
    assert list(run_jobs(kube, namespace, name)) == ["1"]  # one Indexed Job for both ranks
    running = [p for p in kube.pods(namespace, name) if p["status"].get("phase") == "Running"]
    victim = next(p for p in running if p["metadata"]["labels"].get(INDEX) == "1")
    kube.run("delete", "pod", victim["metadata"]["name"], "-n", namespace, "--wait=false")
    obj = wait_phase(kube, namespace, name, "Succeeded", 600)
    # Gang: the lost pod failed attempt 1's Job (backoffLimit 0; its controller stopped rank 0), and attempt 2's
    # Job resumed every rank.
    assert obj["status"]["attempts"] == 2, obj["status"].get("attemptHistory")
    jobs = run_jobs(kube, namespace, name)
    assert sorted(jobs) == ["1", "2"], sorted(jobs)
    first = [c for c in jobs["1"]["status"].get("conditions", []) if c["status"] == "True"]
    assert any(c["type"] == "Failed" for c in first), first
    kube.wait_for("attempt 2's Job Complete",
                  lambda: run_jobs(kube, namespace, name)["2"]["status"].get("completedIndexes") == "0,1", 60)
    resumed = summary(s3, namespace, name).get("resumedFromStep")
    assert resumed and resumed > 0, f"the second attempt did not resume from a checkpoint: {resumed}"
    assert obj["status"]["progress"]["step"] == 300
