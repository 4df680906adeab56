"""Status logic: phases, conditions per the API conventions, attempts, events and Job patches (pure)."""

from __future__ import annotations

import dataclasses
import json

from lft_api.conditions import CHECKPOINTS_HEALTHY, Reason
from lft_api.contract import (
    AdapterRef,
    EarlyStop,
    ExitCode,
    FileDigest,
    Metrics,
    ModelRegistration,
    OciArtifactRef,
    Servability,
    TerminationMessage,
)
from lft_api.resource import TRAINER_OWNED_STATUS_FIELDS, LoRAFineTuneSpec, LoRAFineTuneStatus
from lft_operator import builders
from lft_operator.settings import Settings
from lft_operator.status import (
    OWNED_FIELDS,
    Observation,
    PodCreationFailure,
    Problem,
    classify_create_error,
    decide,
    set_condition,
    status_json_patch,
    update_attempts,
    wants_pod,
)
from lft_operator.views import JobView, PodView

T0, T1, T2, T3 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z", "2026-01-01T00:03:00Z"
OWNER = builders.Owner("run", "ns", "uid-1")


def spec(**overrides) -> LoRAFineTuneSpec:
    raw = {"model": {"name": "m"}, "dataset": {"uri": "d"}, "output": {"uri": "s3://b/run"}}
    raw.update(overrides)
    return LoRAFineTuneSpec.model_validate(raw)


def job_view(s: LoRAFineTuneSpec | None = None, **status) -> JobView:
    body = builders.job(OWNER, s or spec(), Settings())
    body["metadata"]["uid"] = "job-uid"
    body["status"] = status
    return JobView.from_job(body)


def pod(name: str, created: str = T0, **kw) -> PodView:
    return PodView(name=name, uid=f"uid-{name}", created=created, job_uid="job-uid", **kw)


def running(name: str, created: str = T0) -> PodView:
    return pod(name, created, phase="Running", running=True)


def ended(name: str, code: int, message: str | None = None, created: str = T0, deleted: bool = False) -> PodView:
    return pod(
        name,
        created,
        phase="Succeeded" if code == 0 else "Failed",
        exit_code=code,
        term_reason="Completed" if code == 0 else "Error",
        term_message=message,
        finished_at=T1,
        deleted=deleted,
    )


def observe(status=None, s=None, job=None, pods=(), now=T1, problems=(), generation=1, job_lost=False) -> Observation:
    return Observation(
        name="run",
        generation=generation,
        status=status or {},
        spec=s if s is not None else spec(),
        problems=list(problems),
        job_name="run-trainer",
        job=job,
        pods=list(pods),
        now=now,
        job_lost=job_lost,
    )


def step(obs: Observation):
    """decide, and the status the resource has after the patch."""
    d = decide(obs)
    merged = {**obs.status, **d.status}
    return d, merged


def cond(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


def reasons(d) -> list[str]:
    return [e.reason for e in d.events]


def result(outcome: str, reason: str, **kw) -> str:
    return TerminationMessage(outcome=outcome, reason=reason, **kw).encode()


# --- conditions -------------------------------------------------------------------------------


def test_last_transition_time_changes_only_when_status_changes():
    c = set_condition([], "Running", "False", "Pending", "", 1, T0)
    assert c[0].last_transition_time == T0
    c = set_condition(c, "Running", "False", Reason.RETRYING, "attempt 1 failed", 2, T1)
    assert c[0].last_transition_time == T0 and c[0].reason == Reason.RETRYING and c[0].observed_generation == 2
    c = set_condition(c, "Running", "True", Reason.TRAINER_RUNNING, "", 2, T2)
    assert c[0].last_transition_time == T2
    assert "message" not in c[0].to_wire()  # the 1.20 API server takes "" in a list-map item for null
    c = set_condition(c, "Succeeded", "False", Reason.IN_PROGRESS, "", 2, T3)
    assert [x.type for x in c] == ["Running", "Succeeded"]
    assert c[0].last_transition_time == T2


# --- lifecycle --------------------------------------------------------------------------------


def test_not_accepted_creates_nothing_and_says_why_once():
    problems = [Problem(Reason.QUANTIZATION_NEEDS_GPU, "spec.lora.quantization 4bit needs a GPU")]
    d, status = step(observe(problems=problems))
    assert status["phase"] == "Pending"
    acc = cond(status, "Accepted")
    assert acc["status"] == "False" and acc["reason"] == Reason.QUANTIZATION_NEEDS_GPU
    assert reasons(d) == [Reason.QUANTIZATION_NEEDS_GPU] and d.events[0].type == "Warning"
    assert d.job_patches == []
    d2, _ = step(observe(status=status, problems=problems, now=T2))
    assert d2.events == [] and d2.patch == {}  # nothing new: no event, no write


def test_job_created_then_running_then_succeeded():
    job = job_view()
    d, status = step(observe(job=job))
    assert status["phase"] == "Pending" and status["jobName"] == "run-trainer"
    assert cond(status, "Accepted")["status"] == "True"
    assert reasons(d) == [Reason.ACCEPTED, Reason.JOB_CREATED]
    assert status["attempts"] == 0

    d, status = step(observe(status=status, job=job, pods=[running("p1")], now=T2))
    assert status["phase"] == "Running" and status["attempts"] == 1 and status["startTime"] == T0
    assert cond(status, "Running")["status"] == "True"
    assert reasons(d) == [Reason.STARTED]

    message = result(
        "succeeded",
        "Completed",
        adapter=AdapterRef(
            uri="s3://b/run/adapter", files=[FileDigest(name="adapter_model.safetensors", size=10, sha256="ab")]
        ),
        metrics=Metrics(loss=0.5, eval_loss=0.6, eval_loss_before=1.2),
        step=30,
        total_steps=30,
    )
    done_job = job_view(succeeded=1, completionTime=T3, conditions=[{"type": "Complete", "status": "True"}])
    running_status = status
    d, status = step(observe(status=status, job=done_job, pods=[ended("p1", 0, message)], now=T3))
    assert status["phase"] == "Succeeded"
    assert status["adapter"]["uri"] == "s3://b/run/adapter"
    assert status["adapter"]["files"][0]["sha256"] == "ab"
    assert status["completionTime"] == T3
    assert cond(status, "Succeeded")["status"] == "True" and cond(status, "Failed")["status"] == "False"
    assert cond(status, "Running")["status"] == "False"
    assert reasons(d) == ["Succeeded"]
    # Final metrics and progress from the termination message (the trainer has exited).
    assert d.patch["metrics"]["evalLossBefore"] == 1.2
    assert d.patch["progress"]["display"] == "30/30 (100%)"
    # What only the trainer's progress patches carry stays: the progress object is replaced as a whole.
    last = {**running_status, "progress": {"step": 29, "totalSteps": 30, "epoch": 2.9, "tokensPerSecond": 812.5}}
    d_kept, _ = step(observe(status=last, job=done_job, pods=[ended("p1", 0, message)], now=T3))
    assert d_kept.patch["progress"]["epoch"] == 2.9 and d_kept.patch["progress"]["tokensPerSecond"] == 812.5
    assert d_kept.patch["progress"]["step"] == 30
    # Final is final.
    d, status2 = step(observe(status=status, job=done_job, pods=[], now=T3))
    assert status2["phase"] == "Succeeded" and d.events == [] and d.patch == {}


def test_succeeded_run_says_whether_vllm_can_serve_the_adapter():
    done_job = job_view(succeeded=1, completionTime=T3, conditions=[{"type": "Complete", "status": "True"}])
    cases = [(Servability(servable=True, notes=["start vLLM with --max-lora-rank 64"]), "Normal", Reason.SERVABLE,
              "vLLM can serve the adapter: start vLLM with --max-lora-rank 64"),
             (Servability(servable=False, reasons=["DoRA is not supported", "LoRA bias is not supported"]), "Warning",
              Reason.NOT_SERVABLE, "vLLM cannot serve the adapter: DoRA is not supported; LoRA bias is not supported"),
             (None, None, None, None)]  # an older trainer: no verdict, no Event
    for verdict, type_, reason, text in cases:
        message = result("succeeded", "Completed", adapter=AdapterRef(uri="s3://b/run/adapter"), servability=verdict)
        d, status = step(observe(job=done_job, pods=[ended("p1", 0, message)], now=T3))
        assert status["phase"] == "Succeeded" and "servability" not in status
        assert reasons(d)[-2:] == (["Succeeded", reason] if reason else [Reason.JOB_CREATED, "Succeeded"])
        if reason:
            assert (d.events[-1].type, d.events[-1].message) == (type_, text)
        d, _ = step(observe(status=status, job=done_job, pods=[ended("p1", 0, message)], now=T3))
        assert d.events == []  # posted once, with the transition


def test_succeeded_run_says_whether_the_adapter_was_registered_in_mlflow():
    done_job = job_view(succeeded=1, completionTime=T3, conditions=[{"type": "Complete", "status": "True"}])
    ok = ModelRegistration(name="support-bot", source="runs:/r1/adapter", version="3")
    failed = ModelRegistration(name="support-bot", source="runs:/r1/adapter", error="RestException: PERMISSION_DENIED")
    cases = [(ok, "Normal", Reason.MODEL_REGISTERED,
              "The adapter is version 3 of the MLflow registered model support-bot (runs:/r1/adapter)."),
             (failed, "Warning", Reason.MODEL_REGISTRATION_FAILED,
              "The adapter was not registered as MLflow model support-bot: RestException: PERMISSION_DENIED")]
    for registration, type_, reason, text in cases:
        message = result("succeeded", "Completed", adapter=AdapterRef(uri="s3://b/run/adapter"),
                         model_registration=registration)
        d, status = step(observe(job=done_job, pods=[ended("p1", 0, message)], now=T3))
        assert status["phase"] == "Succeeded"  # a failed registration leaves the run's result as it is
        assert status["adapter"]["uri"] == "s3://b/run/adapter"
        assert reasons(d)[-2:] == ["Succeeded", reason]
        assert (d.events[-1].type, d.events[-1].message) == (type_, text)


def test_succeeded_run_with_an_oci_push_has_the_pinned_reference_in_status():
    done_job = job_view(succeeded=1, completionTime=T3, conditions=[{"type": "Complete", "status": "True"}])
    oci = OciArtifactRef(reference="registry.example.com/team/adapter:run", digest="sha256:" + "c" * 64)
    message = result("succeeded", "Completed", adapter=AdapterRef(uri="s3://b/run/adapter", oci=oci))
    _, status = step(observe(job=done_job, pods=[ended("p1", 0, message)], now=T3))
    assert status["adapter"]["oci"] == {"reference": oci.reference, "digest": oci.digest}
    assert cond(status, "Succeeded")["message"] == (
        f"Training completed; adapter at s3://b/run/adapter and registry.example.com/team/adapter@{oci.digest}.")
    LoRAFineTuneStatus.model_validate(status)  # the CRD's status schema has the field


def test_second_identical_observation_changes_nothing():
    job = job_view()
    _, status = step(observe(job=job))
    _, status = step(observe(status=status, job=job, pods=[running("p1")]))
    d, _ = step(observe(status=status, job=job, pods=[running("p1")], now=T3))
    assert d.patch == {} and d.events == [] and d.job_patches == []


def test_invalid_input_fails_at_once_and_the_jobs_pod_failure_policy_ends_the_job():
    job = job_view()
    _, status = step(observe(job=job, pods=[running("p1")]))
    msg = result("invalid_input", "InvalidDataset", message="row 3: missing 'messages'")
    d, status = step(observe(status=status, job=job, pods=[ended("p1", ExitCode.INVALID_INPUT, msg)], now=T2))
    assert status["phase"] == "Failed"
    failed = cond(status, "Failed")
    assert failed["status"] == "True" and failed["reason"] == "InvalidDataset"
    assert "row 3: missing 'messages'" in failed["message"]
    assert d.job_patches == []  # FailJob (podFailurePolicy) ends the Job: nothing to stop
    assert Reason.RETRYING not in reasons(d) and reasons(d)[-1] == "Failed"


POLICY_FAILED = [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                  "message": "Container trainer for pod ns/run-trainer-x exited with code 3 matching FailJob rule at index 0"}]


def test_a_job_failed_by_its_pod_failure_policy_keeps_the_trainers_invalid_input_reason():
    job = job_view()
    _, status = step(observe(job=job, pods=[running("p1")]))
    msg = result("invalid_input", "InvalidDataset", message="row 3: missing 'messages'")
    failed_job = job_view(failed=1, conditions=POLICY_FAILED)
    d, status = step(observe(status=status, job=failed_job, pods=[ended("p1", ExitCode.INVALID_INPUT, msg)], now=T2))
    assert status["phase"] == "Failed" and cond(status, "Failed")["reason"] == "InvalidDataset"
    assert "Invalid input, not retried" in status["message"] and "row 3" in status["message"]
    assert status["failedAttempts"] == 1 and status["attemptHistory"][0]["exitCode"] == 3
    assert d.job_patches == []


def test_a_job_failed_by_its_pod_failure_policy_is_invalid_input_even_without_its_pod():
    _, status = step(observe(job=job_view(), pods=[running("p1")]))
    d, status = step(observe(status=status, job=job_view(failed=1, conditions=POLICY_FAILED), pods=[], now=T2))
    assert status["phase"] == "Failed" and cond(status, "Failed")["reason"] == Reason.INVALID_INPUT
    assert "Invalid input, not retried" in status["message"] and "exited with code 3" in status["message"]
    assert d.job_patches == []


def test_an_evicted_pod_costs_no_retry_as_the_jobs_pod_failure_policy_ignores_it():
    job = job_view()
    _, status = step(observe(job=job, pods=[running("p1")]))
    evicted = dataclasses.replace(ended("p1", ExitCode.PREEMPTED, result("preempted", "Preempted")),
                                  disrupted="EvictionByEvictionAPI", disrupted_message="Eviction API: evicting")
    d, status = step(observe(status=status, job=job, pods=[evicted], now=T2))
    assert status["phase"] == "Pending" and status["failedAttempts"] == 0
    rec = status["attemptHistory"][0]
    assert rec["phase"] == "Stopped" and rec["reason"] == "EvictionByEvictionAPI" and not rec.get("counted")
    assert Reason.RETRYING not in reasons(d) and d.job_patches == []
    d, status = step(observe(status=status, job=job, pods=[evicted, running("p2", T2)], now=T2))
    assert status["phase"] == "Running" and status["attempts"] == 2 and status["failedAttempts"] == 0


def test_retryable_failures_then_backoff_limit():
    s = spec(runPolicy={"backoffLimit": 1})
    job = job_view(s)
    _, status = step(observe(s=s, job=job, pods=[running("p1")]))
    err = result("error", "StorageError", message="upload failed")
    d, status = step(observe(status=status, s=s, job=job, pods=[ended("p1", ExitCode.ERROR, err)], now=T2))
    assert status["phase"] == "Pending" and status["failedAttempts"] == 1
    assert cond(status, "Running")["reason"] == Reason.RETRYING
    assert reasons(d) == [Reason.RETRYING] and "StorageError" in d.events[0].message
    assert d.job_patches == []

    pods = [ended("p1", ExitCode.ERROR, err), running("p2", T2)]
    d, status = step(observe(status=status, s=s, job=job, pods=pods, now=T2))
    assert status["phase"] == "Running" and status["attempts"] == 2 and reasons(d) == [Reason.STARTED]

    pods = [ended("p1", ExitCode.ERROR, err), ended("p2", ExitCode.PREEMPTED, result("preempted", "Preempted"), T2)]
    d, status = step(observe(status=status, s=s, job=job, pods=pods, now=T3))
    # The Job controller counts (backoffLimit 1 is the Job's): no verdict of the operator's, no stop patch.
    assert status["phase"] == "Pending" and status["failedAttempts"] == 2 and d.job_patches == []
    exceeded = job_view(s, failed=2, conditions=[{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                                  "message": "Job has reached the specified backoff limit"}])
    d, status = step(observe(status=status, s=s, job=exceeded, pods=pods, now=T3))
    assert status["phase"] == "Failed" and status["failedAttempts"] == 2
    failed = cond(status, "Failed")
    assert failed["reason"] == "Preempted" and "BackoffLimitExceeded" in failed["message"]
    assert "2 failed attempts" in failed["message"]
    assert d.job_patches == []


def test_job_failed_condition_gives_the_last_attempts_reason():
    job = job_view()
    _, status = step(observe(job=job, pods=[running("p1")]))
    failed_job = job_view(
        failed=1, conditions=[{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "too long"}]
    )
    pods = [ended("p1", ExitCode.ERROR, "Traceback (most recent call last):\n  ...\nRuntimeError: CUDA OOM")]
    d, status = step(observe(status=status, job=failed_job, pods=pods, now=T2))
    assert status["phase"] == "Failed"
    failed = cond(status, "Failed")
    # A non-JSON message (a crash, FallbackToLogsOnError): the container's reason and the log tail.
    assert failed["reason"] == Reason.ERROR and "CUDA OOM" in failed["message"] and "DeadlineExceeded" in failed["message"]
    assert d.job_patches == []  # the Job is finished already


def test_suspend_and_resume():
    job = job_view()
    _, status = step(observe(job=job, pods=[running("p1")]))
    s = spec(suspend=True)
    d, status = step(observe(status=status, s=s, job=job, pods=[running("p1")], now=T1, generation=2))
    assert d.job_patches == [builders.suspend_patch(True)]  # the Job's own spec.suspend
    assert cond(status, "Suspended")["status"] == "True" and cond(status, "Suspended")["reason"] == Reason.SUSPENDING
    assert status["phase"] == "Running" and reasons(d) == [Reason.SUSPENDED]
    assert status["observedGeneration"] == 2

    # The Job controller deleted the pod; the trainer checkpointed and exited 4; the pod is gone.
    suspended_job = job_view(s)
    stopping = [ended("p1", ExitCode.PREEMPTED, result("preempted", "Preempted"), deleted=True)]
    d, status = step(observe(status=status, s=s, job=suspended_job, pods=stopping, now=T2, generation=2))
    d, status = step(observe(status=status, s=s, job=suspended_job, pods=[], now=T2, generation=2))
    assert status["phase"] == "Suspended" and cond(status, "Suspended")["reason"] == Reason.SUSPENDED
    assert status["failedAttempts"] == 0  # a suspend is no failure
    assert status["attemptHistory"][0]["phase"] == "Stopped"
    assert d.job_patches == []

    assert suspended_job.suspended
    s = spec(suspend=False)
    d, status = step(observe(status=status, s=s, job=suspended_job, pods=[], now=T3, generation=3))
    assert d.job_patches == [builders.suspend_patch(False)]
    assert cond(status, "Suspended")["status"] == "False" and reasons(d) == [Reason.RESUMED]
    d, status = step(observe(status=status, s=s, job=job_view(), pods=[running("p2", T3)], now=T3, generation=3))
    assert status["phase"] == "Running" and status["attempts"] == 2


def test_a_running_single_pod_run_edited_to_two_nodes_keeps_its_job_and_says_so():
    """gang_reconcile.requested keeps a started single-pod run on this path: the edit is reported, not applied."""
    job = job_view()
    _, status = step(observe(job=job, pods=[running("p1")]))
    d, status = step(observe(status=status, s=spec(training={"nodes": 2}), job=job, pods=[running("p1")]))
    ignored = cond(status, "SpecChangeIgnored")
    assert ignored["status"] == "True" and ignored["message"].startswith(
        "spec.training.nodes changed after Job run-trainer was created and will not be applied")
    assert status["phase"] == "Running" and not d.job_patches and reasons(d) == ["SpecChangeIgnored"]


def test_pod_deleted_by_hand_is_not_a_failure():
    job = job_view()
    _, status = step(observe(job=job, pods=[running("p1")]))
    _, status = step(observe(status=status, job=job, pods=[], now=T2))
    assert status["attemptHistory"][0]["phase"] == "Stopped"
    assert status["attemptHistory"][0]["reason"] == Reason.POD_DELETED
    assert status["failedAttempts"] == 0 and status["phase"] == "Pending"


def test_spec_change_after_job_creation_is_reported_not_applied():
    job = job_view()
    _, status = step(observe(job=job, pods=[running("p1")]))
    changed = spec(lora={"r": 64}, training={"learningRate": 1e-3}, runPolicy={"backoffLimit": 5})
    d, status = step(observe(status=status, s=changed, job=job, pods=[running("p1")], generation=2))
    ignored = cond(status, "SpecChangeIgnored")
    assert ignored["status"] == "True"
    assert "spec.lora.r" in ignored["message"] and "spec.training.learningRate" in ignored["message"]
    assert "runPolicy" not in ignored["message"]  # run policy changes are applied:
    assert [p["spec"]["backoffLimit"] for p in d.job_patches] == [5]
    assert reasons(d) == ["SpecChangeIgnored"]
    d, status = step(observe(status=status, s=changed, job=job, pods=[running("p1")], generation=2, now=T2))
    assert d.events == []
    d, status = step(observe(status=status, s=spec(), job=job, pods=[running("p1")], generation=3, now=T3))
    assert cond(status, "SpecChangeIgnored")["status"] == "False"


def test_job_deleted_before_it_finished():
    job = job_view()
    _, status = step(observe(job=job, pods=[running("p1")]))
    _, status = step(observe(status=status, job=None, job_lost=True, now=T2))
    assert status["phase"] == "Failed" and cond(status, "Failed")["reason"] == Reason.JOB_DELETED


def test_waiting_pod_reason_is_shown():
    job = job_view()
    p = pod("p1", waiting_reason="CreateContainerConfigError", waiting_message='secret "s3" not found')
    _, status = step(observe(job=job, pods=[p]))
    assert cond(status, "Running")["reason"] == "CreateContainerConfigError"
    assert 'secret "s3" not found' in status["message"]


def test_attempt_history_is_bounded_and_counts_survive_pruning():
    history, attempts, failed = [], 0, 0
    for i in range(30):
        upd = update_attempts(history, attempts, failed, [running(f"p{i:02d}", f"2026-01-01T00:{i:02d}:00Z")], T3)
        upd = update_attempts(upd.history, upd.attempts, upd.failed_attempts, [], T3)
        history, attempts, failed = upd.history, upd.attempts, upd.failed_attempts
    assert attempts == 30 and len(history) == 10
    assert history[-1]["pod"] == "p29"


def test_termination_message_never_grows_status_unbounded():
    job = job_view()
    _, status = step(observe(job=job, pods=[running("p1")]))
    huge = result("error", "Boom", message="x" * 5000)
    _, status = step(observe(status=status, job=job, pods=[ended("p1", 1, huge)], now=T2))
    assert len(json.dumps(status["attemptHistory"])) < 1500


def test_status_json_patch_is_guarded_by_the_uid():
    assert status_json_patch("u", None, {"phase": "Pending", "adapter": None}) == [
        {"op": "test", "path": "/metadata/uid", "value": "u"},
        {"op": "add", "path": "/status", "value": {"phase": "Pending"}},
    ]
    ops = status_json_patch(
        "u", {"adapter": {"uri": "x"}, "phase": "Running"}, {"phase": "Failed", "adapter": None, "message": None}
    )
    assert ops[1:] == [
        {"op": "add", "path": "/status/phase", "value": "Failed"},
        {"op": "remove", "path": "/status/adapter"},
    ]


def test_status_json_patch_is_guarded_by_the_resource_version_read():
    ops = status_json_patch("u", {"phase": "Running"}, {"phase": "Succeeded"}, resource_version="42")
    assert ops[:2] == [
        {"op": "test", "path": "/metadata/uid", "value": "u"},
        {"op": "test", "path": "/metadata/resourceVersion", "value": "42"},
    ]
    assert ops[2:] == [{"op": "add", "path": "/status/phase", "value": "Succeeded"}]


def test_a_pod_deleted_before_it_started_is_no_attempt():
    job = job_view()
    _, status = step(observe(job=job, pods=[running("p1")]))
    msg = result("invalid_input", "InvalidConfig")
    # The Job controller made a replacement at once; stopping the Job deletes it before it starts.
    pods = [ended("p1", ExitCode.INVALID_INPUT, msg), pod("p2", T1)]
    _, status = step(observe(status=status, job=job, pods=pods, now=T2))
    assert status["phase"] == "Failed" and status["attempts"] == 1
    _, status = step(observe(status=status, job=job, pods=[ended("p1", ExitCode.INVALID_INPUT, msg)], now=T3))
    assert status["attempts"] == 1 and [r["pod"] for r in status["attemptHistory"]] == ["p1"]
    assert status["attemptHistory"][0]["attempt"] == 1


def test_unschedulable_pod_says_why():
    p = pod("p1", unschedulable="0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")
    _, status = step(observe(job=job_view(), pods=[p]))
    assert cond(status, "Running")["reason"] == Reason.UNSCHEDULABLE
    assert "Insufficient nvidia.com/gpu" in status["message"]


# --- failures outside the trainer -------------------------------------------------------------


def refused(code: int, message: str, status: dict | None = None, now: str = T1):
    """decide after the API server refused the Job with `code`."""
    obs = observe(status=status, now=now)
    obs.create_error = classify_create_error(code, message)
    return step(obs)


def test_job_rejected_as_invalid_fails_at_once_with_the_servers_message():
    d, status = refused(422, 'Job.batch "run-trainer" is invalid: spec.template.spec.volumes[4].name: '
                             'Duplicate value: "config"')
    assert status["phase"] == "Failed" and 'Duplicate value: "config"' in status["message"]
    assert cond(status, "Failed")["reason"] == Reason.JOB_INVALID
    assert cond(status, "Accepted")["status"] == "False" and cond(status, "Accepted")["reason"] == Reason.JOB_INVALID
    assert reasons(d) == [Reason.JOB_INVALID] and d.events[0].type == "Warning"
    assert d.job_patches == []  # there is no Job
    # Final: the next reconcile (no Job, no error any more) changes nothing.
    d2, _ = step(observe(status=status, now=T2))
    assert d2.patch == {} and d2.events == []


def test_job_creation_forbidden_is_pending_reported_once_and_clears_when_created():
    forbidden = ('jobs.batch "run-trainer" is forbidden: exceeded quota: q, requested: count/jobs.batch=1, '
                 "used: count/jobs.batch=0, limited: count/jobs.batch=0")
    d, status = refused(403, forbidden)
    assert status["phase"] == "Pending" and "exceeded quota" in status["message"]
    assert cond(status, "Running")["reason"] == Reason.JOB_FORBIDDEN
    assert reasons(d) == [Reason.JOB_FORBIDDEN] and d.events[0].type == "Warning"
    d, status = refused(403, forbidden, status, T2)
    assert d.events == [] and d.patch == {}
    d, status = step(observe(status=status, job=job_view(), now=T2))  # quota raised: created
    assert cond(status, "Running")["reason"] == Reason.JOB_CREATED and "forbidden" not in status["message"]


def test_other_create_errors_are_not_classified():
    assert classify_create_error(500, "etcd timeout") is None
    assert classify_create_error(409, "exists") is None


def young_job(**kw) -> JobView:
    return dataclasses.replace(job_view(), created=T0, **kw)


QUOTA = 'Error creating: pods "run-trainer-x1" is forbidden: exceeded quota: pods, requested: pods=1, limited: pods=0'


def test_pod_creation_failure_is_pending_with_the_job_controllers_message_then_times_out():
    job = young_job()
    obs = observe(job=job, now=T1)
    obs.pod_failure = PodCreationFailure(QUOTA, T1)
    d, status = step(obs)
    assert status["phase"] == "Pending" and "exceeded quota" in status["message"]
    assert cond(status, "Running")["reason"] == Reason.POD_CREATION_FAILED
    assert Reason.POD_CREATION_FAILED in reasons(d)

    obs = observe(status=status, job=job, now=T2)
    obs.pod_failure = PodCreationFailure(QUOTA, T2)
    d, status = step(obs)
    assert d.events == [] and status["phase"] == "Pending"  # one Event per transition

    obs = observe(status=status, job=job, now=T3)
    obs.pod_failure, obs.pod_creation_timeout = PodCreationFailure(QUOTA, T3), 120
    d, status = step(obs)
    assert status["phase"] == "Failed" and cond(status, "Failed")["reason"] == Reason.POD_CREATION_TIMEOUT
    assert "exceeded quota" in status["message"] and "180 s" in status["message"]
    assert d.job_patches == [builders.stop_patch()] and reasons(d)[-1] == Reason.POD_CREATION_TIMEOUT


def test_pod_creation_failures_only_count_while_the_job_wants_a_pod():
    stale = PodCreationFailure(QUOTA, T0)
    # An Event from before the last attempt ended is stale.
    pods = [ended("p1", 1, created=T0)]  # finished at T1
    obs = observe(job=young_job(), pods=pods, now=T3)
    obs.pod_failure, obs.pod_creation_timeout = stale, 10
    _, status = step(obs)
    assert status["phase"] == "Pending" and cond(status, "Running")["reason"] == Reason.RETRYING
    # A live pod, a suspended Job: nothing to report.
    for job, pods in ((young_job(), [running("p2")]), (young_job(suspended=True), [])):
        obs = observe(job=job, pods=pods, now=T3)
        obs.pod_failure, obs.pod_creation_timeout = PodCreationFailure(QUOTA, T3), 10
        _, status = step(obs)
        assert status["phase"] != "Failed" and Reason.POD_CREATION_FAILED not in status["message"]
        assert not wants_pod(job, pods)


def health(healthy: bool, **kw) -> dict:
    return {"healthy": healthy, **kw}


def test_checkpoint_health_condition_and_one_warning_per_transition():
    job = job_view()
    _, status = step(observe(job=job))
    assert all(c["type"] != CHECKPOINTS_HEALTHY for c in status["conditions"])  # absent: no condition

    failing = {**status, "checkpointHealth": health(False, message="AccessDenied", failedUploads=1)}
    d, status = step(observe(status=failing, job=job, now=T2))
    c = cond(status, CHECKPOINTS_HEALTHY)
    assert c["status"] == "False" and c["reason"] == Reason.CHECKPOINT_UPLOAD_FAILING and "AccessDenied" in c["message"]
    assert reasons(d) == [Reason.CHECKPOINT_UPLOAD_FAILING] and d.events[0].type == "Warning"
    assert "checkpointHealth" not in d.patch  # the trainer's field

    still = {**status, "checkpointHealth": health(False, message="AccessDenied", failedUploads=2)}
    d, status = step(observe(status=still, job=job, now=T3))
    assert d.events == [] and "2 in a row" in cond(status, CHECKPOINTS_HEALTHY)["message"]

    healed = {**status, "checkpointHealth": health(True, lastUploadedStep=40)}
    d, status = step(observe(status=healed, job=job, now=T3))
    c = cond(status, CHECKPOINTS_HEALTHY)
    assert c["status"] == "True" and c["reason"] == Reason.CHECKPOINTS_UPLOADING and "step 40" in c["message"]
    assert d.events == []


def test_spec_change_message_points_to_resume_from_not_to_re_creating():
    job = job_view()
    _, status = step(observe(job=job))
    _, status = step(observe(status=status, s=spec(lora={"r": 32}), job=job, now=T2))
    message = cond(status, "SpecChangeIgnored")["message"]
    assert "output.resumeFrom" in message and "apply it again" not in message


def test_owned_fields_come_from_the_status_model():
    assert "phase" in OWNED_FIELDS and "attemptHistory" in OWNED_FIELDS and "adapter" in OWNED_FIELDS
    assert "performance" in TRAINER_OWNED_STATUS_FIELDS and "performance" not in OWNED_FIELDS
    assert "artifacts" in TRAINER_OWNED_STATUS_FIELDS and "artifacts" not in OWNED_FIELDS
    assert not set(OWNED_FIELDS) & set(TRAINER_OWNED_STATUS_FIELDS)
    assert set(OWNED_FIELDS) | set(TRAINER_OWNED_STATUS_FIELDS) == {
        f.alias for f in LoRAFineTuneStatus.model_fields.values()
    }


def test_the_operator_never_patches_the_trainers_performance_block():
    job = job_view()
    perf = {"microBatchSize": 8, "gradientAccumulationSteps": 2, "estimatedPeakMemoryGiB": 74.22, "tflops": 293.3}
    _, status = step(observe(job=job))
    d, status = step(observe(status={**status, "performance": perf}, job=job, pods=[running("p1")], now=T2))
    assert "performance" not in d.patch and status["performance"] == perf
    done_job = job_view(succeeded=1, completionTime=T3, conditions=[{"type": "Complete", "status": "True"}])
    message = result("succeeded", "Completed", metrics=Metrics(loss=0.5), step=30, total_steps=30)
    d, status = step(observe(status=status, job=done_job, pods=[ended("p1", 0, message)], now=T3))
    assert status["phase"] == "Succeeded" and "progress" in d.patch  # the trainer's final numbers go in...
    assert "performance" not in d.patch and status["performance"] == perf  # ...but not over its performance


def test_the_operator_never_patches_the_trainers_artifacts_block():
    job = job_view()
    arts = {"metrics": "s3://b/run/metrics.jsonl", "lossPlot": "s3://b/run/loss.png"}
    _, status = step(observe(job=job))
    d, status = step(observe(status={**status, "artifacts": arts}, job=job, pods=[running("p1")], now=T2))
    assert "artifacts" not in d.patch and status["artifacts"] == arts
    done_job = job_view(succeeded=1, completionTime=T3, conditions=[{"type": "Complete", "status": "True"}])
    adapter = AdapterRef(uri="s3://b/run/adapter", files=[])
    message = result("succeeded", "Completed", adapter=adapter, metrics=Metrics(loss=0.5), step=30, total_steps=30)
    d, status = step(observe(status=status, job=done_job, pods=[ended("p1", 0, message)], now=T3))
    assert status["phase"] == "Succeeded" and d.patch["adapter"]["uri"] == "s3://b/run/adapter"
    assert "artifacts" not in d.patch and status["artifacts"] == arts


def test_an_unreadable_status_field_is_rewritten_not_fatal():
    job = job_view()
    _, status = step(observe(job=job))
    broken = {**status, "attemptHistory": [{"pod": "p0", "phase": "Exploded"}], "attempts": 2}
    d, new = step(observe(status=broken, job=job, now=T2))
    assert new["attempts"] == 2 and new["attemptHistory"] == [] and d.patch["attemptHistory"] == []


def test_pod_creation_time_counts_from_the_resume_not_from_the_job():
    job = young_job()
    _, status = step(observe(s=spec(suspend=True), job=dataclasses.replace(job, suspended=True), now=T1))
    assert status["phase"] == "Suspended"
    _, status = step(observe(status=status, job=dataclasses.replace(job, suspended=True), now=T2))  # resume at T2
    obs = observe(status=status, job=job, now=T3)
    obs.pod_failure, obs.pod_creation_timeout = PodCreationFailure(QUOTA, T1), 30  # from before the resume
    _, status = step(obs)
    assert status["phase"] == "Pending" and cond(status, "Running")["reason"] != Reason.POD_CREATION_FAILED
    obs = observe(status=status, job=job, now=T3)
    obs.pod_failure, obs.pod_creation_timeout = PodCreationFailure(QUOTA, T3), 90  # 60 s since the resume
    _, status = step(obs)
    assert status["phase"] == "Pending" and cond(status, "Running")["reason"] == Reason.POD_CREATION_FAILED


def test_a_job_suspended_by_another_controller_is_left_suspended():
    # Kueue creates queued Jobs suspended and resumes them on admission: the operator never resumes those.
    d, status = step(observe(job=dataclasses.replace(job_view(), suspended=True), now=T1))
    assert d.job_patches == [] and status["phase"] == "Pending" and "Kueue" in status["message"]


def test_a_run_that_stopped_early_succeeds_and_says_at_which_step():
    """training.earlyStopping: Succeeded, Completed, with where it stopped; progress N of M as it ended."""
    done_job = job_view(succeeded=1, completionTime=T3, conditions=[{"type": "Complete", "status": "True"}])
    stop = EarlyStop(step=10, total_steps=40, best_eval_loss=1.23456, best_step=5, patience=1)
    message = result("succeeded", "Completed", adapter=AdapterRef(uri="s3://b/run/adapter"), step=10, total_steps=40,
                     stopped_early=stop)
    d, status = step(observe(job=done_job, pods=[ended("p1", 0, message)], now=T3))
    assert status["phase"] == "Succeeded" and cond(status, "Succeeded")["reason"] == "Completed"
    assert cond(status, "Succeeded")["message"] == (
        "Training completed (stopped early at step 10 of 40: 1 evaluation(s) in a row without the eval loss "
        "improving (best 1.2346 at step 5)); adapter at s3://b/run/adapter.")
    assert d.patch["progress"]["display"] == "10/40 (25%)"
    assert EarlyStop.model_validate_json(json.dumps(stop.to_wire())) == stop
