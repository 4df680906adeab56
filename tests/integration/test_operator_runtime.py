"""Operator restarts, secret hygiene, `kubectl get lft` columns and metrics, on a real API server."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from lft_api.contract import Metrics, Progress, TerminationMessage, status_patch
from tests.support.kube import kubectl, kubectl_rows, wait_until
from tests.support.operator import SUCCESS, is_true, run_pod, spec

pytestmark = pytest.mark.integration


def test_operator_killed_mid_run_converges_without_a_second_job(kube, namespace, operator):
    kube.create_lft(namespace, "survivor", spec())
    pod = run_pod(kube, namespace, "survivor")
    kube.wait_lft(namespace, "survivor", lambda s: s.get("phase") == "Running")
    (job,) = kube.jobs(namespace, "survivor")

    operator.kill()  # SIGKILL: no graceful shutdown
    kube.kubelet_exit(pod, 0, SUCCESS)  # the run ends while no operator watches
    kube.create_lft(namespace, "late", spec())  # and a new resource arrives
    operator.start()

    kube.wait_lft(namespace, "survivor", lambda s: s.get("phase") == "Succeeded", timeout=30)
    kube.wait_lft(namespace, "late", lambda s: is_true(s, "Accepted"), timeout=30)
    jobs = kube.jobs(namespace, "survivor")
    assert [j["metadata"]["uid"] for j in jobs] == [job["metadata"]["uid"]]
    assert len(kube.jobs(namespace, "late")) == 1
    # Restarted again while idle: still one Job each, no duplicate events of the transitions.
    operator.restart()
    kube.create_lft(namespace, "probe", spec())
    kube.wait_lft(namespace, "probe", lambda s: is_true(s, "Accepted"), timeout=30)
    assert len(kube.jobs(namespace, "survivor")) == 1 and len(kube.jobs(namespace, "late")) == 1
    assert kube.event_reasons(namespace, "survivor").count("Succeeded") == 1
    assert kube.event_reasons(namespace, "survivor").count("JobCreated") == 1


def test_no_secret_value_in_resource_children_events_or_logs(kube, namespace, operator):
    secret_values = {"AWS_ACCESS_KEY_ID": "AKIAFAKELEAKCHECK001", "AWS_SECRET_ACCESS_KEY": "s3cr3t-must-not-leak-7f9a"}
    kube.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds"}, "stringData": secret_values},
    )
    kube.create_lft(namespace, "careful", spec(storageSecretRef={"name": "s3-creds"}))
    pod = run_pod(kube, namespace, "careful")
    kube.kubelet_exit(pod, 0, SUCCESS)
    kube.wait_lft(namespace, "careful", lambda s: s.get("phase") == "Succeeded")

    texts = {
        "resource": json.dumps(kube.lft(namespace, "careful")),
        "events": json.dumps(kube.events(namespace, "careful")),
        "jobs": json.dumps(kube.jobs(namespace, "careful")),
        "pods": json.dumps(kube.pods(namespace, "careful")),
        "configmap": json.dumps(kube.get(f"/api/v1/namespaces/{namespace}/configmaps/careful-trainer-config")),
        "operator logs": operator.logs(),
    }
    for where, text in texts.items():
        for value in secret_values.values():
            assert value not in text, f"secret value found in {where}"
    # The pod gets the Secret by reference only.
    (container,) = kube.pods(namespace, "careful")[0]["spec"]["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds", "optional": False}}]


def test_kubectl_get_shows_progress_loss_eta_and_wide_columns(kube, namespace, operator):
    kube.create_lft(namespace, "visible", spec())
    run_pod(kube, namespace, "visible")
    uid = kube.wait_lft(namespace, "visible", lambda s: s.get("phase") == "Running")["metadata"]["uid"]

    # What the trainer sends (as its own ServiceAccount, with its run's UID), rate-limited, while it trains.
    as_trainer = {"Impersonate-User": f"system:serviceaccount:{namespace}:visible-trainer"}
    body = status_patch(
        progress=Progress.build(12, 30, epoch=0.4, eta_seconds=200),
        metrics=Metrics(loss=1.2345, learning_rate=2e-4, eval_loss_change=-0.5)
    )
    body["status"]["trainerUid"] = uid
    kube.merge_patch(kube.lft_path(namespace, "visible", "status"), body, headers=as_trainer)

    (row,) = kubectl_rows(kube, namespace)
    assert list(row) == ["NAME", "PHASE", "PROGRESS", "LOSS", "EVALCHANGE", "ETA", "AGE"]
    assert row["NAME"] == "visible" and row["PHASE"] == "Running"
    assert row["PROGRESS"] == "12/30 (40%)"
    assert row["LOSS"] == "1.2345" and row["EVALCHANGE"] == "-0.5"
    assert row["ETA"] == "3m20s"

    (wide,) = kubectl_rows(kube, namespace, "-o", "wide")
    assert list(wide) == ["NAME", "PHASE", "PROGRESS", "LOSS", "EVALCHANGE", "ETA", "AGE", "MODEL", "ATTEMPTS",
                          "NODES", "ADAPTER", "QUEUE"]
    assert wide["MODEL"] == "/opt/lft/models/tiny-phi3" and wide["ATTEMPTS"] == "1"
    assert wide["NODES"] == ""  # multi-node runs only (test_operator_multinode.py)
    assert wide["QUEUE"] == ""  # runs under Kueue only (tests/e2e/test_kueue.py)

    # The operator keeps the trainer's fields: another reconcile (the pod ends) leaves them alone.
    kube.merge_patch(kube.lft_path(namespace, "visible"), {"spec": {"runPolicy": {"backoffLimit": 4}}})
    wait_until(lambda: kube.job(namespace, "visible")["spec"]["backoffLimit"] == 4, 10)
    status = kube.lft(namespace, "visible")["status"]
    assert status["progress"]["step"] == 12 and status["metrics"]["loss"] == 1.2345

    # `kubectl wait` on the condition works.
    pod = kube.pods(namespace, "visible")[0]
    kube.kubelet_exit(pod, 0, SUCCESS)
    kubectl(kube, "wait", "-n", namespace, "--for=condition=Succeeded", "lft/visible", "--timeout=30s")
    (wide,) = kubectl_rows(kube, namespace, "-o", "wide")
    assert wide["PHASE"] == "Succeeded" and wide["ADAPTER"] == "s3://lft-out/run/adapter"
    assert wide["PROGRESS"] == "30/30 (100%)"

    # The schema is structural (tests/integration/test_crd_server_validation.py checks the fields kubectl
    # explain lists); the field docs are in the CRD too. Status: every field.
    explain = kubectl(kube, "explain", "lft.spec.lora")
    assert "LoRA" in explain
    crd = kube.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/lorafinetunes.finetune.dev")
    lora = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["lora"]
    assert "Rank of the LoRA update matrices" in lora["properties"]["r"]["description"]
    explain = kubectl(kube, "explain", "lft.status")
    assert "attemptHistory" in explain and "checkpointHealth" in explain


def test_metrics_endpoint(kube, namespace, operator):
    kube.create_lft(namespace, "counted", spec())
    kube.wait_lft(namespace, "counted", lambda s: is_true(s, "Accepted"))
    text = operator.metrics()
    assert re.search(r"^lft_jobs_created_total \d", text, re.MULTILINE)
    assert re.search(r'^lft_resources\{phase="Pending"\} \d', text, re.MULTILINE)
    assert "lft_reconcile_duration_seconds_bucket" in text
    assert re.search(r"^lft_status_patches_total [1-9]", text, re.MULTILINE)


def test_failure_message_with_crash_log_tail(kube, namespace, operator):
    """A crash before the trainer wrote its JSON: FallbackToLogsOnError gives the log tail."""
    kube.create_lft(namespace, "crash", spec(runPolicy={"backoffLimit": 0}))
    pod = run_pod(kube, namespace, "crash")
    kube.kubelet_exit(pod, 137, "Killed", reason="OOMKilled")
    status = kube.wait_lft(namespace, "crash", lambda s: s.get("phase") == "Failed")["status"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "OOMKilled" and "exit code 137" in failed["message"]
    assert TerminationMessage.decode("Killed") is None


def test_crash_after_creating_only_the_job_is_repaired(kube, tmp_path):
    """An operator died right after creating the Job: the next one adds what the Job still lacks."""
    from lft_api.resource import LoRAFineTuneSpec
    from lft_operator import builders
    from lft_operator.settings import Settings
    from tests.support.kube import Operator

    ns = f"lftcrash-{uuid.uuid4().hex[:8]}"  # outside the session operator's lft-it-* pattern
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    try:
        created = kube.create_lft(ns, "half", spec())
        owner = builders.Owner.from_body(created)
        job = builders.job(owner, LoRAFineTuneSpec.model_validate(created["spec"]), Settings())
        kube.create(f"/apis/batch/v1/namespaces/{ns}/jobs", job)
        op = Operator(kube.kubeconfig, tmp_path / "operator.log", LFT_NAMESPACES=ns)
        op.start()
        try:
            kube.wait_lft(ns, "half", lambda s: is_true(s, "Accepted"))
            for path in (
                f"/api/v1/namespaces/{ns}/configmaps/half-trainer-config",
                f"/api/v1/namespaces/{ns}/serviceaccounts/half-trainer",
                f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles/half-trainer",
                f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/half-trainer",
            ):
                assert kube.get(path) is not None, path
            assert len(kube.jobs(ns, "half")) == 1
        finally:
            op.stop()
    finally:
        kube.delete(f"/api/v1/namespaces/{ns}")
        kube.remove_pods(ns)
