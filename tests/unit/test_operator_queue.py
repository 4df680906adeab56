"""Kueue (status/queue.py and its glue, pure): a run under Kueue is created suspended, Kueue's Workload tells the
status (Queued with Kueue's message, Preempted, Deactivated), and the run's suspend goes through the Workload's
spec.active, never through the Job's suspend that Kueue owns. Workload bodies as Kueue v0.17.0 writes them
(apis/kueue/v1beta2/workload_types.go)."""

from __future__ import annotations

import dataclasses

from lft_api.conditions import Reason
from lft_api.contract import ExitCode
from lft_operator import builders, kueue
from lft_operator.settings import Settings
from lft_operator.status import Observation, decide
from lft_operator.status.draft import Draft
from lft_operator.status.failures import waiting_since
from lft_operator.status.gang import decide_gang
from lft_operator.views import JobView, PodView, WorkloadView
from tests.support.reconciler import make_reconciler
from tests.unit.test_operator_status import OWNER, T0, T1, T2, T3, cond, ended, reasons, running, spec

KUEUE = Settings(kueue=True)
QUOTA_MESSAGE = ("couldn't assign flavors to pod set main: insufficient quota for cpu in flavor default-flavor, "
                 "previously considered podsets requests (0) + current podset request (2) > maximum capacity (1)")


def k_cond(type_: str, status: str, reason: str, message: str = "", since: str = T0) -> dict:
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": since,
            "observedGeneration": 1}


def workload_body(*conditions: dict, active: bool | None = None, cluster_queue: str | None = None,
                  job_uid: str = "job-uid") -> dict:
    spec_ = {"queueName": "team-a", "podSets": [{"name": "main", "count": 1}]}
    if active is not None:
        spec_["active"] = active
    status = {"conditions": list(conditions)}
    if cluster_queue:
        status["admission"] = {"clusterQueue": cluster_queue, "podSetAssignments": []}
    return {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Workload",
            "metadata": {"name": "job-run-trainer-3f2a1", "namespace": "ns", "uid": "wl-uid",
                         "labels": {"kueue.x-k8s.io/job-uid": job_uid},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "run-trainer",
                                              "uid": job_uid, "controller": True}]},
            "spec": spec_, "status": status}


def workload(*conditions: dict, **kw) -> WorkloadView:
    return WorkloadView.from_workload(workload_body(*conditions, **kw))


PENDING_QUOTA = k_cond("QuotaReserved", "False", "Pending", QUOTA_MESSAGE)
ADMITTED = (k_cond("QuotaReserved", "True", "QuotaReserved", "Quota reserved in ClusterQueue cq", T1),
            k_cond("Admitted", "True", "Admitted", "The workload is admitted", T1))
PREEMPTED = (k_cond("QuotaReserved", "False", "Pending", QUOTA_MESSAGE, T2),
             k_cond("Admitted", "False", "NoReservation", "The workload has no reservation", T2),
             k_cond("Evicted", "True", "Preempted", "Preempted to accommodate a workload (UID: w2, JobUID: j2) due to "
                    "prioritization in the ClusterQueue", T2),
             k_cond("Preempted", "True", "InClusterQueue", "Preempted to accommodate a workload (UID: w2) due to "
                    "prioritization in the ClusterQueue", T2),
             k_cond("Requeued", "True", "Preempted", "Preempted to accommodate a workload", T2))
DEACTIVATED = (k_cond("QuotaReserved", "False", "Pending", "The workload is deactivated", T2),
               k_cond("Evicted", "True", "Deactivated", "The workload is deactivated", T2))


def kjob(s=None, suspended: bool | None = None, wl: WorkloadView | None = None, settings: Settings = KUEUE) -> JobView:
    """The Job as the operator builds it (under Kueue: created suspended), with its Workload from the cache."""
    body = builders.job(OWNER, s or spec(queueName="team-a"), settings)
    body["metadata"]["uid"] = "job-uid"
    if suspended is not None:
        body["spec"]["suspend"] = suspended  # Kueue's doing
    return dataclasses.replace(JobView.from_job(body), workload=wl)


def observe(status=None, s=None, job=None, pods=(), now=T1, generation=1, on=True) -> Observation:
    return Observation(name="run", generation=generation, status=status or {}, spec=s or spec(queueName="team-a"),
                       problems=[], job_name="run-trainer", job=job, pods=list(pods), now=now, kueue=on)


def step(obs: Observation):
    d = decide(obs)
    return d, {**obs.status, **d.status}


# --- the Job and the Workload as the operator reads them ------------------------------------------


def test_a_job_with_a_queue_is_created_suspended_only_with_the_integration_on():
    on = builders.job(OWNER, spec(queueName="team-a"), KUEUE)
    assert on["spec"]["suspend"] is True and on["metadata"]["labels"][builders.KUEUE_QUEUE_LABEL] == "team-a"
    off = builders.job(OWNER, spec(queueName="team-a"), Settings())
    assert off["spec"]["suspend"] is False  # as before: the label only (Kueue's webhook, if any, suspends it)
    assert builders.job(OWNER, spec(), KUEUE)["spec"]["suspend"] is False  # no queue: not Kueue's
    assert JobView.from_job(on).queue_name == "team-a" and JobView.from_job(builders.job(OWNER, spec(), KUEUE)).queue_name is None


def test_a_workload_priority_class_label_reaches_the_job():
    s = spec(queueName="team-a", podTemplate={"labels": {"kueue.x-k8s.io/priority-class": "high"}})
    assert builders.job(OWNER, s, KUEUE)["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "high"


def test_the_default_local_queue_label_set_by_kueues_webhook_is_read_back():
    body = builders.job(OWNER, spec(), KUEUE)
    body["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = "default"  # Kueue's ApplyDefaultLocalQueue
    body["spec"]["suspend"] = True  # Kueue's ApplyDefaultForSuspend
    assert JobView.from_job(body).queue_name == "default"


def test_workload_view_reads_kueues_fields():
    wl = workload(*ADMITTED, cluster_queue="cq")
    assert (wl.name, wl.job_uid, wl.queue_name, wl.active, wl.cluster_queue) == (
        "job-run-trainer-3f2a1", "job-uid", "team-a", True, "cq")
    assert wl.is_true("Admitted") and wl.admitted_at == T1 and not wl.is_true("Evicted")
    assert not workload(*DEACTIVATED, active=False).active
    body = workload_body(PENDING_QUOTA)
    del body["metadata"]["labels"]
    assert WorkloadView.from_workload(body).job_uid == "job-uid"  # the controlling Job, without the label


# --- stages of a single-pod run ------------------------------------------------------------------


def test_queued_with_kueues_message_and_the_operator_leaves_the_job_suspended():
    job = kjob(wl=workload(PENDING_QUOTA))
    d, status = step(observe(job=job))
    assert status["phase"] == "Pending"
    assert cond(status, "Running")["reason"] == Reason.QUEUED
    assert "LocalQueue team-a" in status["message"] and "insufficient quota for cpu in flavor default-flavor" in status["message"]
    assert status["queue"]["state"] == "Queued" and status["queue"]["display"] == "Queued (team-a)"
    assert status["queue"]["workload"] == "job-run-trainer-3f2a1"
    assert d.job_patches == [] and d.workload_patches == []
    assert Reason.QUEUED in reasons(d)
    # Kueue's message changes (another scheduling cycle): the status follows, no second Event.
    job2 = kjob(wl=workload(k_cond("QuotaReserved", "False", "Pending", "insufficient unused quota for cpu")))
    d, status = step(observe(status=status, job=job2, now=T2))
    assert "insufficient unused quota" in status["message"] and Reason.QUEUED not in reasons(d)


def test_queued_before_kueue_made_the_workload():
    d, status = step(observe(job=kjob(wl=None)))
    assert cond(status, "Running")["reason"] == Reason.QUEUED and "waiting for Kueue to create" in status["message"]
    assert status["queue"]["state"] == "Queued" and d.job_patches == []


def test_admitted_runs_as_today_and_the_admission_time_restarts_the_pod_creation_clock():
    wl = workload(*ADMITTED, cluster_queue="cq")
    job = kjob(suspended=False, wl=wl)
    _, status = step(observe(job=job, pods=[running("p1", T1)], now=T2))
    assert status["phase"] == "Running" and cond(status, "Running")["reason"] == Reason.TRAINER_RUNNING
    assert status["queue"]["state"] == "Admitted" and status["queue"]["clusterQueue"] == "cq"
    late = dataclasses.replace(job, created=T0)
    assert waiting_since(Draft(observe(job=late, now=T3)), [], late) == T1  # queued T0..T1 is no pod-creation wait


def test_a_finished_run_reads_finished_in_its_queue():
    job = kjob(suspended=False, wl=workload(*ADMITTED, cluster_queue="cq"))
    _, status = step(observe(job=job, pods=[running("p1", T1)], now=T1))
    done = dataclasses.replace(job, complete=True)
    _, status = step(observe(status=status, job=done, pods=[ended("p1", 0)], now=T2))
    assert status["phase"] == "Succeeded" and status["queue"]["state"] == "Finished"
    assert status["queue"]["display"] == "Finished (team-a)" and status["queue"]["clusterQueue"] == "cq"


def test_preempted_by_kueue_reads_suspended_then_resumes_when_admitted_again():
    admitted = kjob(suspended=False, wl=workload(*ADMITTED, cluster_queue="cq"))
    _, status = step(observe(job=admitted, pods=[running("p1", T1)], now=T1))
    # Kueue evicted the Workload for a higher-priority one and suspended the Job: the pod checkpoints and goes.
    preempted = kjob(suspended=True, wl=workload(*PREEMPTED))
    stopping = [ended("p1", ExitCode.PREEMPTED, None, deleted=True)]
    d, status = step(observe(status=status, job=preempted, pods=stopping, now=T2))
    assert status["phase"] == "Suspended"
    suspended = cond(status, "Suspended")
    assert suspended["status"] == "True" and suspended["reason"] == Reason.PREEMPTED
    assert "InClusterQueue" in suspended["message"] and "prioritization in the ClusterQueue" in suspended["message"]
    assert "insufficient quota" in suspended["message"]  # why it waits now, in Kueue's words
    assert status["queue"]["state"] == "Preempted" and status["failedAttempts"] == 0
    assert d.job_patches == [] and d.workload_patches == []  # neither unsuspends what the other suspended
    assert [e.type for e in d.events if e.reason == Reason.PREEMPTED] == ["Warning"]
    # Admitted again: Kueue unsuspends the Job, a new pod resumes from the checkpoint.
    readmitted = kjob(suspended=False, wl=workload(*ADMITTED, cluster_queue="cq"))
    d, status = step(observe(status=status, job=readmitted, pods=[*stopping, running("p2", T3)], now=T3))
    assert status["phase"] == "Running" and cond(status, "Suspended")["reason"] == Reason.RESUMED
    assert Reason.RESUMED in reasons(d) and d.job_patches == []


def test_the_users_suspend_goes_through_the_workload_never_the_job():
    s = spec(queueName="team-a", suspend=True)
    job = kjob(suspended=False, wl=workload(*ADMITTED, cluster_queue="cq"))
    _, status = step(observe(job=job, pods=[running("p1")], now=T1))
    d, status = step(observe(status=status, s=s, job=job, pods=[running("p1")], now=T1, generation=2))
    assert d.job_patches == []  # Kueue would unsuspend the Job of an admitted Workload
    assert d.workload_patches == [("job-run-trainer-3f2a1", kueue.active_patch(False))]
    assert cond(status, "Suspended")["reason"] == Reason.SUSPENDING
    # Kueue evicted it (Deactivated) and suspended the Job: Suspended, nothing more to patch.
    off = kjob(suspended=True, wl=workload(*DEACTIVATED, active=False))
    d, status = step(observe(status=status, s=s, job=off, pods=[], now=T2, generation=2))
    assert status["phase"] == "Suspended" and cond(status, "Suspended")["reason"] == Reason.SUSPENDED
    assert d.workload_patches == [] and d.job_patches == []
    # Resume: the Workload set active again; Suspended until Kueue has it back in its queue.
    s = spec(queueName="team-a", suspend=False)
    d, status = step(observe(status=status, s=s, job=off, pods=[], now=T3, generation=3))
    assert d.workload_patches == [("job-run-trainer-3f2a1", kueue.active_patch(True))] and d.job_patches == []
    assert status["phase"] == "Suspended" and "Resuming" in status["message"]
    requeued = kjob(suspended=True, wl=workload(*DEACTIVATED, active=True))
    d, status = step(observe(status=status, s=s, job=requeued, pods=[], now=T3, generation=3))
    assert d.workload_patches == [] and d.job_patches == []
    assert cond(status, "Suspended")["reason"] == Reason.RESUMED and cond(status, "Running")["reason"] == Reason.QUEUED
    assert status["phase"] == "Pending"
    assert "back in the queue after its deactivation" in status["message"], status["message"]


def test_a_workload_deactivated_by_someone_else_stays_so():
    job = kjob(suspended=True, wl=workload(*DEACTIVATED, active=False))
    d, status = step(observe(job=job, now=T2))
    assert d.workload_patches == [] and d.job_patches == []
    assert status["phase"] == "Suspended" and cond(status, "Suspended")["reason"] == Reason.DEACTIVATED
    assert status["queue"]["state"] == "Deactivated"


def test_the_users_resume_never_unsuspends_a_job_kueue_holds():
    """Without the integration's rule the operator's resume would unsuspend the Job, which Kueue suspends again."""
    s = spec(queueName="team-a", suspend=True)
    job = kjob(suspended=True, wl=workload(PENDING_QUOTA))
    _, status = step(observe(s=s, job=job, now=T1))
    d, status = step(observe(status=status, s=spec(queueName="team-a"), job=job, now=T2, generation=2))
    assert d.job_patches == [] and cond(status, "Running")["reason"] == Reason.QUEUED


def test_with_the_integration_off_nothing_changes():
    job = kjob(suspended=True, wl=None, settings=Settings())
    d, status = step(observe(job=job, on=False))
    assert cond(status, "Running")["reason"] == Reason.POD_PENDING and "another controller" in status["message"]
    assert d.status["queue"] is None and d.job_patches == []
    assert d.workload_patches == []


# --- a multi-node run: one Indexed Job per attempt, one Workload: all nodes admitted, or none --------


def gang_job(wl: WorkloadView | None, suspended: bool = True) -> JobView:
    return JobView(name="run-trainer-a1", uid="job-uid", owner_uid="u", attempt=1, nodes=2, suspended=suspended,
                   queue_name="team-a", workload=wl)


def gang_observe(status: dict, job: JobView, pods=(), s=None) -> Observation:
    return Observation(name="run", generation=1, status=status, spec=s or spec(queueName="team-a", training={"nodes": 2}),
                       problems=[], job_name="run-trainer", job=None, pods=list(pods), now=T1, jobs=[job], kueue=True)


def test_a_queued_multi_node_run_is_wholly_pending():
    d = decide_gang(gang_observe({"attempts": 1, "phase": "Pending"}, gang_job(workload(PENDING_QUOTA))))
    assert d.status["phase"] == "Pending" and d.status["readyNodes"] == 0
    assert "insufficient quota" in d.status["message"] and d.job_patches == [] and d.create_attempt is None


def test_a_preempted_multi_node_run_is_suspended_and_its_suspend_goes_through_the_workload():
    d = decide_gang(gang_observe({"attempts": 1, "phase": "Running"}, gang_job(workload(*PREEMPTED))))
    assert d.status["phase"] == "Suspended" and d.job_patches == [] and d.create_attempt is None
    assert next(c for c in d.status["conditions"] if c["type"] == "Suspended")["reason"] == Reason.PREEMPTED
    s = spec(queueName="team-a", training={"nodes": 2}, suspend=True)
    running_pods = [PodView(name=f"run-trainer-a1-{r}", uid=f"p{r}", created=T0, job_uid="job-uid", node_rank=r,
                            attempt=1, phase="Running", running=True) for r in (0, 1)]
    d = decide_gang(gang_observe({"attempts": 1, "phase": "Running"},
                                 gang_job(workload(*ADMITTED, cluster_queue="cq"), suspended=False), running_pods, s))
    assert d.job_patches == [] and d.workload_patches == [("job-run-trainer-3f2a1", kueue.active_patch(False))]


# --- the glue: the index cache and the reconciler's Workload patch ------------------------------------


def test_the_index_cache_hands_each_job_its_workload():
    from lft_operator.handlers import IndexCache

    cache = IndexCache()
    job = kjob(wl=None)
    cache.bind({("ns", "run"): [job]}, {}, {})
    assert cache.jobs("ns", "run")[0].workload is None  # no Workload watch (integration off, or none seen yet)
    wl = workload(PENDING_QUOTA)
    cache.bind_workloads({"job-uid": [wl], "other-job": [workload(job_uid="other-job")]})
    assert cache.jobs("ns", "run")[0].workload == wl


def test_the_reconciler_patches_the_workload_for_the_users_suspend():
    import asyncio


    job = kjob(suspended=False, wl=workload(*ADMITTED, cluster_queue="cq"))
    pod = PodView(name="run-trainer-x", uid="p1", created=T0, job_uid="job-uid", phase="Running", running=True)

    class Cache:
        def jobs(self, namespace, name):
            return [dataclasses.replace(job, owner_uid="uid-1")]

        def pods(self, namespace, name):
            return [pod]

        def outputs(self, namespace, root):
            return []

    class Kube:
        def __init__(self) -> None:
            self.merge_patches: list = []

        async def merge_patch(self, path, patch):
            self.merge_patches.append((path, patch))
            return {}

        async def json_patch(self, path, ops):
            return {"metadata": {"uid": "uid-1"}, "status": {}}

    kube = Kube()

    async def run() -> None:
        reconciler, _, _ = make_reconciler(kube=kube, cache=Cache(), kueue=True)
        reconciler.memory.fresh[("ns", "run")] = {
            "metadata": {"name": "run", "namespace": "ns", "uid": "uid-1", "generation": 2, "resourceVersion": "7"},
            "spec": {"model": {"name": "m"}, "dataset": {"uri": "d"}, "output": {"uri": "s3://b/run"},
                     "queueName": "team-a", "suspend": True},
            "status": {"phase": "Running", "jobName": "run-trainer", "observedGeneration": 1},
        }
        await reconciler.reconcile("ns", "run")
        await reconciler.close()

    asyncio.run(run())
    workload_patches = [(p, b) for p, b in kube.merge_patches if "/workloads/" in p]
    assert workload_patches == [("/apis/kueue.x-k8s.io/v1beta2/namespaces/ns/workloads/job-run-trainer-3f2a1",
                                 {"spec": {"active": False}})]
    assert not [b for p, b in kube.merge_patches if "/jobs/" in p and "suspend" in b.get("spec", {})]
