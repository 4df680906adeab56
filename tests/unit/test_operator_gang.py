"""Gang semantics of a multi-node run (status/gang.py, pure): one Indexed Job per attempt; one failed pod fails the
Job (backoffLimit 0), the Job controller stops the other ranks, and the next attempt's Job resumes every rank."""

from __future__ import annotations

from lft_api.contract import TerminationMessage
from lft_api.resource import LoRAFineTuneSpec
from lft_operator import builders
from lft_operator.status import Observation
from lft_operator.status.gang import decide_gang
from lft_operator.views import JobView, PodView

NOW = "2026-12-01T00:00:00Z"


def spec(**extra) -> LoRAFineTuneSpec:
    return LoRAFineTuneSpec.model_validate({"model": {"name": "m"}, "dataset": {"uri": "s3://d/x.jsonl"},
                                            "output": {"uri": "s3://o/big"}, "training": {"nodes": 2}, **extra})


def job(attempt: int, nodes: int = 2, **kw) -> JobView:
    return JobView(name=f"big-trainer-a{attempt}", uid=f"j{attempt}", owner_uid="u", attempt=attempt, nodes=nodes, **kw)


def failed_job(attempt: int, reason: str = "BackoffLimitExceeded", **kw) -> JobView:
    return job(attempt, failed_reason=reason, failed_message="Job has reached the specified backoff limit", **kw)


def pod(rank: int, attempt: int, **kw) -> PodView:
    return PodView(name=f"big-trainer-a{attempt}-{rank}-x", uid=f"p{attempt}-{rank}", created=NOW,
                   job_uid=f"j{attempt}", node_rank=rank, attempt=attempt, **kw)


def observe(status: dict, jobs=(), pods=(), s: LoRAFineTuneSpec | None = None, problems=()) -> Observation:
    return Observation(name="big", generation=1, status=status, spec=s or spec(), problems=list(problems),
                       job_name="big-trainer", job=None, pods=list(pods), now=NOW, jobs=list(jobs))


def running(rank: int, attempt: int) -> PodView:
    return pod(rank, attempt, phase="Running", running=True)


def test_a_new_run_creates_the_first_attempt():
    d = decide_gang(observe({}))
    assert d.create_attempt == 1 and d.status["attempts"] == 1 and d.status["phase"] == "Pending"
    assert d.status["nodes"] == 2 and d.status["attemptHistory"][0]["attempt"] == 1


def test_running_when_every_node_runs_with_ready_nodes():
    status = {"attempts": 1, "phase": "Pending"}
    half = decide_gang(observe(status, [job(1)], [running(0, 1), pod(1, 1)]))
    assert half.status["phase"] == "Pending" and half.status["readyNodes"] == 1 and half.create_attempt is None
    assert half.status["nodesDisplay"] == "1/2"  # the Nodes printer column (-o wide)
    assert "1/2 nodes running" in half.status["message"]
    full = decide_gang(observe(status, [job(1)], [running(0, 1), running(1, 1)]))
    assert full.status["phase"] == "Running" and full.status["readyNodes"] == 2 and not full.job_patches
    assert "Attempt 1 running on 2/2 nodes" in full.status["message"] and full.status["nodesDisplay"] == "2/2"


def test_an_unschedulable_node_is_reported_with_the_schedulers_reason():
    stuck = pod(1, 1, unschedulable="0/1 nodes are available: 1 Insufficient cpu.")
    d = decide_gang(observe({"attempts": 1}, [job(1)], [running(0, 1), stuck]))
    running_cond = next(c for c in d.status["conditions"] if c["type"] == "Running")
    assert running_cond["reason"] == "Unschedulable" and "Insufficient cpu" in d.status["message"]
    assert "node 1" in d.status["message"]


def test_one_failed_pod_ends_the_attempt_the_job_controller_stops_the_others_then_the_next_attempt_starts():
    failed = pod(1, 1, phase="Failed", exit_code=1, term_reason="Error", term_message="boom", finished_at=NOW)
    d = decide_gang(observe({"attempts": 1, "phase": "Running"}, [job(1)], [running(0, 1), failed]))
    assert d.create_attempt is None and d.job_patches == []  # nothing deleted: the Job fails (backoffLimit 0)
    assert d.status["failedAttempts"] == 1 and d.status["phase"] == "Pending"
    rec = d.status["attemptHistory"][-1]
    assert rec["phase"] == "Failed" and rec["pod"] == failed.name and rec["exitCode"] == 1 and rec["counted"]
    assert any(e.reason == "Retrying" for e in d.events)
    assert "Waiting for the Job controller to stop the pods of attempt 1: big-trainer-a1-0-x" in d.status["message"]
    # The Job failed; rank 0 is still stopping (deleted by the Job controller): counted once, no second Event.
    stopping = pod(0, 1, phase="Running", running=True, deleted=True)
    again = decide_gang(observe(d.status, [failed_job(1)], [failed, stopping]))
    assert again.status["failedAttempts"] == 1 and not any(e.reason == "Retrying" for e in again.events)
    assert again.create_attempt is None and "boom" in again.status["message"]
    # Every pod of attempt 1 has ended: attempt 2's Job, every rank from the newest checkpoint.
    stopped = pod(0, 1, phase="Failed", exit_code=4, deleted=True)
    go = decide_gang(observe(again.status, [failed_job(1)], [failed, stopped]))
    assert go.create_attempt == 2 and go.status["attempts"] == 2 and go.status["failedAttempts"] == 1
    assert go.status["attemptHistory"][-1] == {**go.status["attemptHistory"][-1], "attempt": 2, "phase": "Pending"}
    # The old Job stays (logs, its ttlSecondsAfterFinished): attempt 2's Job is the current one.
    nxt = decide_gang(observe(go.status, [failed_job(1), job(2)], [failed, stopped, running(0, 2), running(1, 2)]))
    assert nxt.status["phase"] == "Running" and nxt.status["attempts"] == 2 and nxt.create_attempt is None


def test_a_failed_job_whose_pods_are_gone_still_ends_the_attempt():
    d = decide_gang(observe({"attempts": 1, "phase": "Running"}, [failed_job(1)], []))
    assert d.create_attempt == 2 and d.status["failedAttempts"] == 1
    assert d.status["attemptHistory"][0]["reason"] == "BackoffLimitExceeded"


def test_an_evicted_pod_ends_the_attempt_but_costs_no_retry():
    evicted = pod(0, 1, phase="Failed", pod_reason="Evicted", pod_message="The node was low on memory.",
                  disrupted="EvictionByEvictionAPI", disrupted_message="Eviction API: evicting")
    d = decide_gang(observe({"attempts": 1}, [job(1)], [evicted, running(1, 1)]))
    rec = d.status["attemptHistory"][-1]
    assert rec["phase"] == "Failed" and rec["reason"] == "EvictionByEvictionAPI" and rec["counted"] is False
    assert d.status["failedAttempts"] == 0 and "not counted" in d.status["message"]
    go = decide_gang(observe(d.status, [failed_job(1)], [evicted, pod(1, 1, phase="Failed", exit_code=4, deleted=True)]))
    assert go.create_attempt == 2 and go.status["failedAttempts"] == 0


def test_pods_stopped_by_a_suspend_end_no_attempt():
    s = spec(suspend=True)
    suspended = job(1, suspended=True)
    stopped = [pod(r, 1, phase="Failed", exit_code=4, deleted=True) for r in (0, 1)]
    d = decide_gang(observe({"attempts": 1, "phase": "Running"}, [suspended], stopped, s=s))
    assert d.status["phase"] == "Suspended" and d.status["failedAttempts"] == 0 and d.create_attempt is None


def test_the_next_attempt_starts_only_when_every_pod_of_the_last_one_is_gone():
    failed_status = {"attempts": 1, "failedAttempts": 1, "phase": "Pending",
                     "attemptHistory": [{"attempt": 1, "pod": "x", "phase": "Failed", "counted": True}]}
    stopping = pod(0, 1, phase="Running", running=True, deleted=True)
    wait = decide_gang(observe(failed_status, [failed_job(1)], [stopping]))
    assert wait.create_attempt is None and "stop the pods of attempt 1" in wait.status["message"]
    go = decide_gang(observe(failed_status, [failed_job(1)], []))
    assert go.create_attempt == 2 and go.status["attempts"] == 2 and go.status["failedAttempts"] == 1


def test_a_job_created_before_the_status_recorded_it_is_not_created_twice():
    d = decide_gang(observe({"attempts": 1}, [failed_job(1), job(2)], []))  # attempt 2 created, status says 1
    assert d.create_attempt is None and d.status["attempts"] == 2


def test_backoff_limit_and_invalid_input_are_final():
    failed = pod(0, 2, phase="Failed", exit_code=1, finished_at=NOW)
    status = {"attempts": 2, "failedAttempts": 1}
    d = decide_gang(observe(status, [job(2)], [failed], s=spec(runPolicy={"backoffLimit": 1})))
    assert d.status["phase"] == "Failed" and "2 failed attempts" in d.status["message"] and d.create_attempt is None
    assert d.job_patches == []  # backoffLimit 0: the Job controller fails the Job and stops the other rank
    invalid = pod(0, 1, phase="Failed", exit_code=3, term_message=TerminationMessage(
        outcome="invalid_input", reason="InvalidDataset", message="row 7: no messages").encode())
    d = decide_gang(observe({"attempts": 1}, [failed_job(1, "PodFailurePolicy")], [invalid]))
    assert d.status["phase"] == "Failed" and "row 7" in d.status["message"] and d.create_attempt is None
    assert next(c for c in d.status["conditions"] if c["type"] == "Failed")["reason"] == "InvalidDataset"
    assert d.job_patches == []


def test_rank_zero_success_is_the_runs_result():
    msg = TerminationMessage(outcome="succeeded", reason="Completed", message="ok", step=10, total_steps=10)
    done = pod(0, 1, phase="Succeeded", exit_code=0, term_message=msg.encode())
    d = decide_gang(observe({"attempts": 1}, [job(1)], [done, running(1, 1)]))
    assert d.status["phase"] == "Succeeded" and not d.job_patches
    later = decide_gang(observe(d.status, [job(1, complete=True)], [done]))
    assert later.status["phase"] == "Succeeded" and not later.job_patches  # the Job of a success stays (logs)


def test_suspend_is_the_jobs_own_and_resume_restarts_every_rank_of_the_same_job():
    s = spec(suspend=True)
    d = decide_gang(observe({"attempts": 1}, [job(1)], [running(0, 1), running(1, 1)], s=s))
    assert d.job_patches == [builders.suspend_patch(True)] and d.patch_attempt == 1
    assert d.status["phase"] == "Running" and "Suspending" in d.status["message"] and d.create_attempt is None
    gone = decide_gang(observe(d.status, [job(1, suspended=True)], [], s=s))
    assert gone.status["phase"] == "Suspended" and gone.create_attempt is None and gone.job_patches == []
    resumed = decide_gang(observe(gone.status, [job(1, suspended=True)], []))
    assert resumed.job_patches == [builders.suspend_patch(False)] and resumed.create_attempt is None
    assert resumed.patch_attempt == 1  # the patch goes to attempt 1's Job
    assert any(e.reason == "Resumed" for e in resumed.events) and resumed.status["attempts"] == 1
    # A Job suspended by someone else (Kueue) is not resumed by the operator.
    queued = decide_gang(observe({"attempts": 1}, [job(1, suspended=True)], []))
    assert queued.job_patches == [] and "Kueue" in queued.status["message"]


def test_problems_before_the_first_attempt_create_nothing():
    from lft_operator.status import Problem

    d = decide_gang(observe({}, problems=[Problem("OutputInUse", "s3://o/big holds another run's checkpoints")]))
    assert d.create_attempt is None and "another run" in d.status["message"]


QUOTA = 'pods "big-trainer-a1-1-x" is forbidden: exceeded quota: no-pods, requested: pods=1, used: pods=0, limited: pods=0'


def test_a_node_whose_pod_cannot_be_created_is_reported_with_the_api_message():
    from lft_operator.status import PodCreationFailure

    jobs = [job(1, created="2026-11-30T23:59:00Z")]
    obs = observe({"attempts": 1, "phase": "Pending"}, jobs, [running(0, 1)])
    obs.node_pod_failures = {"j1": PodCreationFailure(QUOTA, "2026-11-30T23:59:30Z")}
    d = decide_gang(obs)
    cond = next(c for c in d.status["conditions"] if c["type"] == "Running")
    assert d.status["phase"] == "Pending" and cond["reason"] == "PodCreationFailed"
    assert "(Job big-trainer-a1)" in d.status["message"] and "exceeded quota" in d.status["message"]
    assert cond["message"] == d.status["message"]
    warned = [e for e in d.events if e.reason == "PodCreationFailed"]
    assert len(warned) == 1 and warned[0].type == "Warning" and "big-trainer-a1" in warned[0].message
    assert not d.job_patches and d.create_attempt is None
    again = observe(d.status, jobs, [running(0, 1)])
    again.node_pod_failures = obs.node_pod_failures
    assert not [e for e in decide_gang(again).events if e.reason == "PodCreationFailed"]  # once per transition
    # An Event from before this attempt's Jobs (an earlier attempt's quota) is stale: not reported.
    old = observe({"attempts": 1, "phase": "Pending"}, jobs, [running(0, 1)])
    old.node_pod_failures = {"j1": PodCreationFailure(QUOTA, "2026-11-30T23:58:00Z")}
    assert "PodCreationFailed" not in str(decide_gang(old).status["conditions"])


def test_no_pod_created_within_the_timeout_fails_the_run_and_stops_the_job():
    from lft_operator.status import PodCreationFailure

    jobs = [job(1, created="2026-11-30T23:50:00Z")]
    obs = observe({"attempts": 1, "phase": "Pending",
                   "attemptHistory": [{"attempt": 1, "pod": "big-trainer-a1-0", "phase": "Pending"}]},
                  jobs, [running(1, 1)])
    obs.node_pod_failures = {"j1": PodCreationFailure(QUOTA, "2026-11-30T23:59:50Z")}
    obs.pod_creation_timeout = 300
    d = decide_gang(obs)
    assert d.status["phase"] == "Failed" and d.job_patches == [builders.stop_patch()] and d.patch_attempt == 1
    failed = next(c for c in d.status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PodCreationTimeout"
    assert d.status["message"].startswith("Job big-trainer-a1: No trainer pod could be created for 600 s")
    assert "exceeded quota" in d.status["message"] and any(e.reason == "PodCreationTimeout" for e in d.events)
    assert d.status["attemptHistory"][-1]["phase"] == "Failed"
    # Failed already, the Job not yet: stopped again; Failed for another reason: nothing to stop.
    assert decide_gang(observe(d.status, jobs, [running(1, 1)])).job_patches == [builders.stop_patch()]
    # Under the timeout: still Pending.
    obs.pod_creation_timeout = 900
    assert decide_gang(obs).status["phase"] == "Pending"


def annotated(attempt: int, nodes: int, **kw) -> JobView:
    import json

    from lft_operator.builders import applied_spec

    return job(attempt, nodes, applied_spec=json.dumps(applied_spec(spec(training={"nodes": nodes}))), **kw)


def test_a_changed_node_count_is_reported_and_the_running_attempt_keeps_its_nodes():
    status = {"attempts": 1, "phase": "Running", "nodes": 2}
    jobs = [annotated(1, 2)]
    more = decide_gang(observe(status, jobs, [running(0, 1), running(1, 1)], s=spec(training={"nodes": 3})))
    # No third rank (its trainer would be rank 2 of a 2-node config), nothing torn down.
    assert more.create_attempt is None and not more.job_patches
    assert more.status["phase"] == "Running" and more.status["nodes"] == 2 and "2/2 nodes" in more.status["message"]
    ignored = next(c for c in more.status["conditions"] if c["type"] == "SpecChangeIgnored")
    assert ignored["status"] == "True" and ignored["reason"] == "SpecChangedAfterStart"
    assert ignored["message"].startswith("spec.training.nodes changed after the run started and will not be applied")
    assert "(2 nodes)" in ignored["message"]
    assert [e.type for e in more.events if e.reason == "SpecChangeIgnored"] == ["Warning"]
    fewer = decide_gang(observe({**status, "nodes": 3}, [annotated(1, 3)],
                                [running(0, 1), running(1, 1), running(2, 1)], s=spec(training={"nodes": 2})))
    assert fewer.status["phase"] == "Running" and "3/3 nodes" in fewer.status["message"]  # not "3/2", not stuck
    # The next attempt (after a failure) has the run's count too.
    failed = {"attempts": 1, "failedAttempts": 1, "phase": "Pending", "nodes": 2,
              "attemptHistory": [{"attempt": 1, "pod": "x", "phase": "Failed", "counted": True}]}
    nxt = decide_gang(observe(failed, [failed_job(1)], [], s=spec(training={"nodes": 3})))
    assert nxt.create_attempt == 2 and nxt.status["nodes"] == 2
    # Before the first attempt the spec still decides (e.g. a run refused for its output, then edited).
    assert decide_gang(observe({"nodes": 2}, s=spec(training={"nodes": 3}))).status["nodes"] == 3


def test_the_path_of_a_started_run_stays_whatever_training_nodes_says_later():
    from lft_operator.gang_reconcile import requested

    def body(nodes):
        return {"metadata": {"uid": "u"}, "spec": {"training": {"nodes": nodes}}}

    single = JobView(name="big-trainer", uid="j", owner_uid="u")
    assert not requested(body(2), {"jobName": "big-trainer", "attempts": 1}, [single])  # the single Job runs on
    assert not requested(body(2), {"jobName": "big-trainer"}, [])  # its Job not in the cache (yet, or deleted)
    assert requested(body(1), {"attempts": 1, "nodes": 2}, [job(1)])  # the gang runs on
    assert requested(body(1), {"attempts": 1, "nodes": 2}, [])  # between two attempts
    # Nothing started: the spec decides (a namesake's Job, another uid, does not count).
    assert requested(body(2), {}, [JobView(name="big-trainer", uid="x", owner_uid="other")])
    assert not requested(body(1), {"nodes": 2}, []) and requested(body(2), {}, [])
    assert not requested({"metadata": {"uid": "u"}, "spec": {"training": "bad"}}, {}, [])


def test_a_rank_whose_machine_stops_reporting_is_named_and_the_attempt_ends_when_its_pod_fails():
    # The node controller marks the pods of a node that stopped reporting not ready (MarkPodsNotReady); their
    # container still last reported running. The status names the machine and waits; no new attempt yet.
    since = "2026-11-30T23:59:30Z"
    lost = pod(1, 1, phase="Running", running=True, node_name="lft-worker2", not_ready_since=since)
    status = {"attempts": 1, "phase": "Running"}
    d = decide_gang(observe(status, [job(1)], [running(0, 1), lost]))
    assert d.status["phase"] == "Pending" and d.create_attempt is None and d.job_patches == []
    assert d.status["readyNodes"] == 1 and d.status["nodesDisplay"] == "1/2"
    running_cond = next(c for c in d.status["conditions"] if c["type"] == "Running")
    assert running_cond["reason"] == "NodeUnreachable"
    assert "node 1 (pod big-trainer-a1-1-x) on lft-worker2 stopped reporting" in d.status["message"]
    assert since in d.status["message"]
    (event,) = [e for e in d.events if e.reason == "NodeUnreachable"]
    assert event.type == "Warning" and "lft-worker2" in event.message
    again = decide_gang(observe(d.status, [job(1)], [running(0, 1), lost]))
    assert not any(e.reason == "NodeUnreachable" for e in again.events)  # one Event per outage
    # The machine comes back: its kubelet fails the pod whose container is gone; the attempt ends, naming it.
    gone = pod(1, 1, phase="Failed", exit_code=137, term_reason="ContainerStatusUnknown", finished_at=NOW,
               node_name="lft-worker2")
    ended = decide_gang(observe(again.status, [failed_job(1)], [gone]))
    assert ended.create_attempt == 2
    (retry,) = [e for e in ended.events if e.reason == "Retrying"]
    assert "node 1 (pod big-trainer-a1-1-x on lft-worker2)" in retry.message


def test_a_pod_not_ready_before_its_container_runs_is_not_a_lost_machine():
    starting = pod(1, 1, phase="Pending", running=False, node_name="w", not_ready_since=NOW)
    assert not starting.node_lost
    d = decide_gang(observe({"attempts": 1}, [job(1)], [running(0, 1), starting]))
    running_cond = next(c for c in d.status["conditions"] if c["type"] == "Running")
    assert running_cond["reason"] != "NodeUnreachable"


def test_the_pod_view_reads_the_machine_and_the_ready_condition():
    body = {"metadata": {"name": "p", "uid": "u", "labels": {"finetune.dev/attempt": "1"},
                         "annotations": {"batch.kubernetes.io/job-completion-index": "1"}},
            "spec": {"nodeName": "lft-worker2"},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": "T1"}],
                       "containerStatuses": [{"name": builders.CONTAINER_NAME, "state": {"running": {}}}]}}
    view = PodView.from_pod(body)
    assert view.node_name == "lft-worker2" and view.not_ready_since == "T1" and view.node_lost
    body["status"]["conditions"][0]["status"] = "True"
    assert not PodView.from_pod(body).node_lost


def test_an_attempt_ended_by_a_rank_whose_peer_lost_its_machine_names_that_machine_while_it_waits():
    # Seen on kind (docker stop of rank 1's worker): rank 0 checkpoints and exits (its peer is gone), the attempt
    # ends, and rank 1's pod cannot be stopped until its machine is back: the status says why it waits.
    stopped = pod(0, 1, phase="Failed", exit_code=4, term_reason="Preempted", finished_at=NOW, node_name="lft-worker2")
    lost = pod(1, 1, phase="Running", running=True, node_name="lft-worker", not_ready_since="2026-11-30T23:59:40Z")
    d = decide_gang(observe({"attempts": 1, "phase": "Running"}, [failed_job(1)], [stopped, lost]))
    assert d.create_attempt is None and d.status["phase"] == "Pending"
    running_cond = next(c for c in d.status["conditions"] if c["type"] == "Running")
    assert running_cond["reason"] == "AttemptEnding"
    assert "node 1 (pod big-trainer-a1-1-x) on lft-worker stopped reporting" in d.status["message"]
    assert [e.reason for e in d.events if e.type == "Warning"] == ["Retrying", "NodeUnreachable"]
    again = decide_gang(observe(d.status, [failed_job(1)], [stopped, lost]))
    assert not again.events  # neither Event repeats while it waits
