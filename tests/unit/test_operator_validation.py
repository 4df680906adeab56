"""Semantic validation, views of Jobs/pods, settings, and the work queue."""

from __future__ import annotations

import asyncio

from lft_api.conditions import Reason
from lft_operator.settings import Settings
from lft_operator.validation import validate, validate_resource
from lft_operator.views import JobView, PodView
from lft_operator.workqueue import WorkQueue

BASE = {"model": {"name": "m"}, "dataset": {"uri": "d"}, "output": {"uri": "s3://b/p"}}


def test_valid_spec():
    spec, problems = validate(BASE, "run")
    assert spec is not None and problems == []


def test_qlora_needs_gpus():
    _, problems = validate({**BASE, "lora": {"quantization": "4bit"}}, "run")
    assert [p.reason for p in problems] == ["QuantizationNeedsGPU"]
    assert "spec.resources.gpus" in problems[0].message
    _, problems = validate({**BASE, "lora": {"quantization": "4bit"}, "resources": {"gpus": 1}}, "run")
    assert problems == []


def test_cross_field_rules_of_the_shared_model():
    raw = {**BASE, "dataset": {"uri": "d", "format": "text"}, "training": {"assistantOnlyLoss": True}}
    spec, problems = validate(raw, "run")
    assert spec is None and problems[0].reason == Reason.INVALID_SPEC
    assert "assistantOnlyLoss" in problems[0].message


def test_a_spec_refused_for_unknown_fields_stays_refused_after_the_server_prunes_them():
    # An upgrade to the structural CRD: the stored spec's typo (lora.rank) is pruned as it is read, so the same
    # generation reads as valid. It must not train with defaults: only an edit (a new generation) is read anew.
    refused = {"type": "Accepted", "status": "False", "reason": Reason.UNKNOWN_FIELD,
               "message": "unknown field spec.lora.rank", "observedGeneration": 4}
    body = {"metadata": {"name": "run", "generation": 4}, "spec": BASE}
    spec, problems = validate_resource(body, {"conditions": [refused]})
    assert [(p.reason, p.message) for p in problems] == [(Reason.UNKNOWN_FIELD, "unknown field spec.lora.rank")]
    edited = {**body, "metadata": {"name": "run", "generation": 5}}
    assert validate_resource(edited, {"conditions": [refused]})[1] == []
    assert validate_resource(body, {"conditions": [{**refused, "reason": Reason.POLICY_VIOLATION}]})[1] == []
    # Still unknown to the models (an old CRD): reported once, by the models.
    typo = {**body, "spec": {**BASE, "lora": {"rank": 8}}}
    assert [p.reason for p in validate_resource(typo, {"conditions": [refused]})[1]] == [Reason.UNKNOWN_FIELD]


def test_unknown_field_is_reported_without_values():
    spec, problems = validate({**BASE, "lora": {"rank": 8}}, "run")
    assert spec is None and "spec.lora.rank" in problems[0].message


def test_mounts_need_volumes_and_names_must_fit():
    raw = {**BASE, "podTemplate": {"volumeMounts": [{"name": "data", "mountPath": "/data"}]}}
    _, problems = validate(raw, "x" * 56)
    assert {p.reason for p in problems} == {"InvalidPodTemplate", "NameTooLong"}


def test_settings_from_env():
    s = Settings.from_env(
        {
            "LFT_TRAINER_IMAGE": "img:1",
            "LFT_NAMESPACES": "a, b",
            "LFT_DEFAULT_STORAGE_ENDPOINT": "http://minio:9000",
            "LFT_METRICS_PORT": "0",
            "LFT_LEADER_ELECTION": "false",
            "LFT_LOG_LEVEL": "debug",
        }
    )
    assert s.trainer_image == "img:1" and s.namespaces == ("a", "b")
    assert s.default_storage_endpoint == "http://minio:9000" and s.metrics_port == 0
    assert s.leader_election is False and s.log_level == "DEBUG"
    assert Settings.from_env({"LFT_NAMESPACES": "all"}).namespaces == ()
    assert Settings.from_env({}).leader_election is True


def test_settings_every_env_name_and_default(monkeypatch):
    env = {
        "LFT_TRAINER_IMAGE": "i:2",
        "LFT_TRAINER_IMAGE_PULL_POLICY": "Always",
        "LFT_TRAINER_IMAGE_PULL_SECRETS": "regcred,, mirror ",
        "LFT_DEFAULT_STORAGE_SECRET": "s3",
        "LFT_LIVENESS_PORT": "0",
        "LFT_LEADER_ELECTION_LEASE_NAME": "l",
        "LFT_LEADER_ELECTION_NAMESPACE": "ops",
        "LFT_LEADER_ELECTION_LEASE_DURATION_SECONDS": "6",
        "LFT_LEADER_ELECTION_RENEW_DEADLINE_SECONDS": "4",
        "LFT_LEADER_ELECTION_RETRY_PERIOD_SECONDS": "0.5",
        "LFT_RESYNC_SECONDS": "2.5",
        "LFT_API_WORKERS": "3",
        "LFT_TERMINATION_GRACE_SECONDS": "30",
        "LFT_TRAINER_STATUS_INTERVAL_SECONDS": "1.5",
        "LFT_WATCH_SERVER_TIMEOUT": "60",
        "LFT_POD_CREATION_TIMEOUT_SECONDS": "20",
        "LFT_JSON_LOGS": "0",
        "LFT_NAMESPACES": "*",
    }
    s = Settings.from_env(env)
    assert (s.trainer_image, s.trainer_image_pull_policy, s.default_storage_secret) == ("i:2", "Always", "s3")
    assert s.trainer_image_pull_secrets == ("regcred", "mirror")
    assert (s.liveness_port, s.resync_seconds, s.api_workers) == (0, 2.5, 3)
    assert (s.leader_election_lease_name, s.leader_election_namespace) == ("l", "ops")
    assert (s.leader_election_lease_duration_seconds, s.leader_election_renew_deadline_seconds,
            s.leader_election_retry_period_seconds) == (6, 4.0, 0.5)
    assert (s.termination_grace_seconds, s.trainer_status_interval, s.watch_server_timeout) == (30, 1.5, 60)
    assert s.pod_creation_timeout_seconds == 20 and s.json_logs is False and s.namespaces == ()
    # Empty means default; the process environment is read when no mapping is given.
    empty = Settings.from_env({name: "" for name in env})
    assert empty == Settings.from_env({}) and empty.pod_creation_timeout_seconds == 600
    assert empty.trainer_image == "lft/trainer:cpu" and empty.json_logs is True
    assert empty.trainer_image_pull_secrets == ()
    monkeypatch.setenv("LFT_NAMESPACES", "x,y")
    monkeypatch.setenv("LFT_LEADER_ELECTION", "0")
    assert (Settings().namespaces, Settings().leader_election) == (("x", "y"), False)


def test_pod_view_reads_the_trainer_container():
    body = {
        "metadata": {
            "name": "p",
            "uid": "u",
            "creationTimestamp": "t",
            "deletionTimestamp": "t2",
            "ownerReferences": [{"uid": "job-uid", "controller": True}],
        },
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {"name": "sidecar", "state": {"terminated": {"exitCode": 0}}},
                {"name": "trainer", "state": {"terminated": {"exitCode": 4, "message": "{}", "reason": "Error"}}},
            ],
        },
    }
    view = PodView.from_pod(body)
    assert view.exit_code == 4 and view.deleted and view.terminated and view.job_uid == "job-uid"


def test_job_view_conditions():
    body = {
        "metadata": {"name": "j", "uid": "u", "ownerReferences": [{"uid": "cr", "controller": True}]},
        "spec": {"parallelism": 0, "backoffLimit": 2},
        "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]},
    }
    view = JobView.from_job(body)
    assert view.parallelism == 0 and view.failed_reason == "BackoffLimitExceeded" and not view.complete
    assert view.owner_uid == "cr"


def test_workqueue_coalesces_and_retries():
    calls: list[str] = []
    release = None

    async def handler(key):
        calls.append(key)
        if len(calls) == 1:
            await release.wait()

    async def scenario():
        nonlocal release
        release = asyncio.Event()
        q = WorkQueue(handler, base_backoff=0.01)
        q.add("a")
        await asyncio.sleep(0.01)
        for _ in range(5):  # triggers while running collapse into one rerun
            q.add("a")
        release.set()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not q.busy:
                break
        return q

    q = asyncio.run(scenario())
    # The first run, then one rerun for the five triggers that came while it ran.
    assert calls == ["a", "a"]
    assert q.failures == 0

    calls.clear()

    async def failing():
        q = WorkQueue(lambda key: _fail_once(calls, key), base_backoff=0.01)
        q.add("b")
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not q.busy:
                break
        return q

    q = asyncio.run(failing())
    assert calls == ["b", "b"] and q.failures == 1


async def _fail_once(calls: list, key) -> None:
    calls.append(key)
    if len(calls) == 1:
        raise RuntimeError("transient")


def test_workqueue_gives_the_next_free_worker_to_urgent_keys():
    order: list[str] = []
    gate = None

    async def handler(key):
        order.append(key)
        if key == "busy":
            await gate.wait()

    async def scenario():
        nonlocal gate
        gate = asyncio.Event()
        q = WorkQueue(handler, concurrency=1)
        q.add("busy")
        await asyncio.sleep(0.01)  # "busy" holds the only worker
        for key in ("status-1", "status-2"):
            q.add(key)
        await asyncio.sleep(0.01)
        q.add("new", urgent=True)  # arrives last, runs first
        await asyncio.sleep(0.01)
        gate.set()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not q.busy:
                break

    asyncio.run(scenario())
    assert order == ["busy", "new", "status-1", "status-2"]
