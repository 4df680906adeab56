"""Which watch events trigger a reconcile (Reconciler.on_resource / on_child), without a cluster."""

from __future__ import annotations

import asyncio

from lft_operator.reconcile import Reconciler, resource_fingerprint
from lft_operator.views import JobView, PodView
from tests.support.reconciler import RecordingQueue
from tests.support.reconciler import make_reconciler as make_reconciler_with


def make_reconciler(**kw) -> tuple[Reconciler, RecordingQueue]:
    reconciler, queue, _ = make_reconciler_with(**kw)
    return reconciler, queue


def body(generation: int = 1, **status) -> dict:
    return {"metadata": {"uid": "u", "generation": generation}, "spec": {}, "status": status}


def test_trainer_progress_patches_trigger_nothing():
    reconciler, queue = make_reconciler()
    reconciler.on_resource("ns", "r", body(phase="Running", observedGeneration=1))
    reconciler.on_resource("ns", "r", body(phase="Running", observedGeneration=1, progress={"step": 5}))
    reconciler.on_resource("ns", "r", body(phase="Running", observedGeneration=1, metrics={"loss": 1.0}))
    assert queue.added == [("ns", "r")]
    reconciler.on_resource("ns", "r", body(generation=2, phase="Running", observedGeneration=1))  # spec edit
    assert len(queue.added) == 2


def test_the_echo_of_the_operators_own_write_is_skipped():
    reconciler, queue = make_reconciler()
    written = body(phase="Pending", observedGeneration=1)
    reconciler.memory.fingerprints[("ns", "r")] = resource_fingerprint(written)  # as after a status patch
    reconciler.on_resource("ns", "r", written)
    assert queue.added == []


def test_new_resources_are_used_as_read_from_the_watch():
    reconciler, _ = make_reconciler()
    reconciler.on_resource("ns", "new", body())
    assert ("ns", "new") in reconciler.memory.fresh
    reconciler.on_resource("ns", "old", body(observedGeneration=1, phase="Running"))
    assert ("ns", "old") not in reconciler.memory.fresh


def test_child_events_trigger_only_on_relevant_changes():
    reconciler, queue = make_reconciler()
    job = JobView(name="j", uid="j1", parallelism=1)
    reconciler.on_child("ns", "r", "j1", job)
    counted = {"metadata": {"name": "j", "uid": "j1"}, "spec": {"parallelism": 1}, "status": {"active": 1}}
    reconciler.on_child("ns", "r", "j1", JobView.from_job(counted))  # a count only
    assert len(queue.added) == 1
    reconciler.on_child("ns", "r", "j1", JobView(name="j", uid="j1", suspended=True))
    assert len(queue.added) == 2
    pod = PodView(name="p", uid="p1", created="t")
    reconciler.on_child("ns", "r", "p1", pod)
    reconciler.on_child("ns", "r", "p1", pod)
    reconciler.on_child("ns", "r", "p1", PodView(name="p", uid="p1", created="t", phase="Running", running=True))
    reconciler.on_child("ns", "r", "p1", None)  # deleted
    assert len(queue.added) == 5


def test_never_reconciled_resources_are_urgent():
    reconciler, queue = make_reconciler()
    reconciler.on_resource("ns", "new", body())  # no observedGeneration yet: nothing exists for it
    reconciler.on_resource("ns", "old", body(observedGeneration=1, phase="Running"))
    assert queue.urgent == [("ns", "new")]
    assert queue.added == [("ns", "new"), ("ns", "old")]


class RefusingKube:
    """Records calls; refuses Job creation with `status` (as the API server does)."""

    def __init__(self, status: int, message: str) -> None:
        self.refusal = (status, message)
        self.status_patches: list = []

    async def get(self, path, accept=None):
        return None

    async def create(self, path, body):
        if path.endswith("/jobs"):
            from lft_operator.kube import ApiError

            raise ApiError(self.refusal[0], "Refused", self.refusal[1])
        return body

    async def json_patch(self, path, ops):
        self.status_patches.append(ops)
        return {"metadata": {"uid": "u"}, "status": ops[-1]["value"]}


class NoChildren:
    def jobs(self, namespace, name):
        return []

    def pods(self, namespace, name):
        return []

    def outputs(self, namespace, root):
        return []


def reconcile_refused(status: int, message: str) -> tuple[dict, list]:
    kube = RefusingKube(status, message)
    retries: list = []

    async def run() -> None:
        reconciler, queue = make_reconciler(kube=kube, cache=NoChildren())
        resource = {
            "metadata": {"name": "r", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": {"model": {"name": "m"}, "dataset": {"uri": "d"}, "output": {"uri": "s3://b/r"}},
        }
        reconciler.memory.fresh[("ns", "r")] = resource
        await reconciler.reconcile("ns", "r")  # does not raise: the refusal is reported, not retried blindly
        await reconciler.close()
        retries.extend(delay for _, delay in queue.delayed)

    asyncio.run(run())
    (ops,) = kube.status_patches
    return ops[-1]["value"], retries


def test_a_job_the_api_server_rejects_as_invalid_is_reported_and_not_retried():
    status, retries = reconcile_refused(422, 'Job.batch "r-trainer" is invalid: Duplicate value: "config"')
    assert status["phase"] == "Failed" and "Duplicate value" in status["message"] and retries == []


def test_a_forbidden_job_is_reported_and_retried_with_backoff():
    status, retries = reconcile_refused(403, 'jobs.batch "r-trainer" is forbidden: exceeded quota')
    assert status["phase"] == "Pending" and "exceeded quota" in status["message"] and retries == [2.0]


class CompletedJobCache(NoChildren):
    """The watch caches right after a reconnect: the Job's Complete condition is in, its pod's end is not."""

    def jobs(self, namespace, name):
        return [JobView(name="r-trainer", uid="j1", owner_uid="u", complete=True, created="2026-01-01T00:00:00Z")]


class PodListingKube:
    """Serves the one pod list the reconcile reads; records status patches."""

    def __init__(self, pods: list) -> None:
        self.pods = pods
        self.status_patches: list = []

    async def list_items(self, path, **params):
        return self.pods if path.endswith("/pods") else []

    async def json_patch(self, path, ops):
        self.status_patches.append(ops)
        return {"metadata": {"uid": "u"}, "status": {}}


def test_a_complete_job_whose_pod_end_was_not_seen_yet_reads_the_pod_for_the_adapter():
    from lft_api.contract import AdapterRef, FileDigest, TerminationMessage

    result = TerminationMessage(outcome="succeeded", reason="Completed", step=30, total_steps=30,
                                adapter=AdapterRef(uri="s3://b/r/adapter", files=[FileDigest(name="a", size=1, sha256="0" * 64)]))
    pod = {
        "metadata": {"name": "r-trainer-x", "uid": "p1", "creationTimestamp": "2026-01-01T00:00:01Z",
                     "ownerReferences": [{"uid": "j1", "controller": True}]},
        "status": {"phase": "Succeeded", "containerStatuses": [{"name": "trainer", "state": {"terminated": {
            "exitCode": 0, "reason": "Completed", "message": result.encode(), "finishedAt": "2026-01-01T00:01:00Z"}}}]},
    }
    kube = PodListingKube([pod])

    async def run() -> None:
        reconciler, _ = make_reconciler(kube=kube, cache=CompletedJobCache())
        reconciler.memory.fresh[("ns", "r")] = {
            "metadata": {"name": "r", "namespace": "ns", "uid": "u", "generation": 1, "resourceVersion": "7"},
            "spec": {"model": {"name": "m"}, "dataset": {"uri": "d"}, "output": {"uri": "s3://b/r"}},
            "status": {"phase": "Running", "jobName": "r-trainer", "observedGeneration": 1},
        }
        await reconciler.reconcile("ns", "r")
        await reconciler.close()

    asyncio.run(run())
    (ops,) = kube.status_patches
    written = {op["path"]: op.get("value") for op in ops}
    assert written["/status/phase"] == "Succeeded"
    assert written["/status/adapter"]["uri"] == "s3://b/r/adapter", "Succeeded without the adapter of the pod"
