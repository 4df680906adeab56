"""The operator against a real kube-apiserver, etcd and kube-controller-manager (Job controller, GC).

The tests play the kubelet: they bind, start and end the pods the real Job controller creates,
with the exit codes and termination messages of the trainer contract.
"""

from __future__ import annotations

import time

import pytest

from lft_api.conditions import Reason
from lft_api.contract import ExitCode, TerminationMessage
from tests.support.kube import ApiError, wait_until
from tests.support.operator import SUCCESS, cond, is_true, run_pod, spec

pytestmark = pytest.mark.integration


def test_create_makes_job_and_rbac_owned_by_the_resource(kube, namespace, operator):
    created = kube.create_lft(namespace, "basic", spec(runPolicy={"backoffLimit": 2}))
    uid = created["metadata"]["uid"]
    status = kube.wait_lft(namespace, "basic", lambda s: is_true(s, "Accepted")).get("status")
    assert status["jobName"] == "basic-trainer" and status["phase"] == "Pending"

    children = {
        "Job": f"/apis/batch/v1/namespaces/{namespace}/jobs/basic-trainer",
        "ConfigMap": f"/api/v1/namespaces/{namespace}/configmaps/basic-trainer-config",
        "ServiceAccount": f"/api/v1/namespaces/{namespace}/serviceaccounts/basic-trainer",
        "Role": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles/basic-trainer",
        "RoleBinding": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings/basic-trainer",
    }
    for kind, path in children.items():
        body = kube.get(path)
        assert body is not None, kind
        (ref,) = body["metadata"]["ownerReferences"]
        assert ref["uid"] == uid and ref["kind"] == "LoRAFineTune" and ref["controller"] is True, kind
    job = kube.get(children["Job"])
    assert job["spec"]["backoffLimit"] == 2 and job["spec"]["suspend"] is False
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # The native primitives, as the API server stored them.
    assert job["spec"]["podReplacementPolicy"] == "Failed"
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [3]
    assert rules[1]["action"] == "Ignore" and rules[1]["onPodConditions"][0]["type"] == "DisruptionTarget"
    # The real Job controller made the pod.
    pod = kube.wait_for_pod(namespace, "basic")
    assert pod["spec"]["serviceAccountName"] == "basic-trainer"
    wait_until(lambda: {Reason.ACCEPTED, Reason.JOB_CREATED} <= set(kube.event_reasons(namespace, "basic")), 10)


def test_trainer_service_account_may_patch_only_its_own_status(kube, namespace, operator):
    kube.create_lft(namespace, "mine", spec())
    kube.create_lft(namespace, "other", spec())
    kube.wait_lft(namespace, "mine", lambda s: is_true(s, "Accepted"))
    as_trainer = {"Impersonate-User": f"system:serviceaccount:{namespace}:mine-trainer"}
    progress = {"status": {"progress": {"step": 3, "totalSteps": 30, "display": "3/30 (10%)", "eta": "1m00s"}}}
    kube.merge_patch(kube.lft_path(namespace, "mine", "status"), progress, headers=as_trainer)
    with pytest.raises(ApiError) as denied:
        kube.merge_patch(kube.lft_path(namespace, "other", "status"), progress, headers=as_trainer)
    assert denied.value.status == 403
    with pytest.raises(ApiError) as denied:
        kube.merge_patch(kube.lft_path(namespace, "mine"), {"spec": {"suspend": True}}, headers=as_trainer)
    assert denied.value.status == 403


def test_success_reports_adapter_and_final_metrics(kube, namespace, operator):
    kube.create_lft(namespace, "ok", spec())
    pod = run_pod(kube, namespace, "ok")
    status = kube.wait_lft(namespace, "ok", lambda s: s.get("phase") == "Running")["status"]
    assert status["attempts"] == 1 and is_true(status, "Running")

    kube.kubelet_exit(pod, 0, SUCCESS)
    status = kube.wait_lft(namespace, "ok", lambda s: s.get("phase") == "Succeeded")["status"]
    assert status["adapter"]["uri"] == "s3://lft-out/run/adapter"
    assert status["adapter"]["files"][0]["name"] == "adapter_model.safetensors"
    assert status["metrics"]["evalLossBefore"] == 1.9 and status["metrics"]["loss"] == 0.42
    assert status["progress"]["display"] == "30/30 (100%)"
    assert is_true(status, "Succeeded") and not is_true(status, "Failed")
    assert status["completionTime"]
    wait_until(lambda: {Reason.STARTED, "Succeeded"} <= set(kube.event_reasons(namespace, "ok")), 10)
    # The Job controller agrees.
    wait_until(lambda: (kube.job(namespace, "ok") or {}).get("status", {}).get("succeeded") == 1, 20)


def test_retryable_failures_until_backoff_limit(kube, namespace, operator):
    kube.create_lft(namespace, "flaky", spec(runPolicy={"backoffLimit": 1}))
    error = TerminationMessage(outcome="error", reason="StorageUnavailable", message="S3 endpoint unreachable").encode()
    pod = run_pod(kube, namespace, "flaky")
    kube.kubelet_exit(pod, ExitCode.ERROR, error)
    status = kube.wait_lft(namespace, "flaky", lambda s: s.get("failedAttempts") == 1)["status"]
    assert status["phase"] in ("Pending", "Running")
    assert not is_true(status, "Failed")
    wait_until(lambda: Reason.RETRYING in kube.event_reasons(namespace, "flaky"), 10)

    # The Job controller retries (after its backoff); the second attempt fails too.
    pod = run_pod(kube, namespace, "flaky", count=2)
    kube.wait_lft(namespace, "flaky", lambda s: s.get("attempts") == 2)
    kube.kubelet_exit(pod, ExitCode.ERROR, error)
    status = kube.wait_lft(namespace, "flaky", lambda s: s.get("phase") == "Failed")["status"]
    failed = cond(status, "Failed")
    assert failed["reason"] == "StorageUnavailable"
    assert "S3 endpoint unreachable" in failed["message"]
    assert status["attempts"] == 2 and status["failedAttempts"] == 2
    # The Job controller counted (backoffLimit 1 is the Job's) and gave the verdict.
    assert "BackoffLimitExceeded" in failed["message"]
    assert kube.job_condition(namespace, "flaky", "Failed")["reason"] == "BackoffLimitExceeded"
    assert kube.job(namespace, "flaky")["status"]["failed"] == 2
    time.sleep(3)
    assert len(kube.pods(namespace, "flaky")) == 2  # no third attempt


def test_invalid_input_fails_at_once_without_retry(kube, namespace, operator):
    kube.create_lft(namespace, "bad-data", spec(runPolicy={"backoffLimit": 3}))
    invalid = TerminationMessage(
        outcome="invalid_input", reason="InvalidDataset", message="row 7: 'messages' is missing"
    ).encode()
    pod = run_pod(kube, namespace, "bad-data")
    kube.kubelet_exit(pod, ExitCode.INVALID_INPUT, invalid)
    status = kube.wait_lft(namespace, "bad-data", lambda s: s.get("phase") == "Failed")["status"]
    failed = cond(status, "Failed")
    assert failed["reason"] == "InvalidDataset" and "row 7" in failed["message"]
    assert status["attempts"] == 1
    # The Job's podFailurePolicy (FailJob on exit code 3) ended it: Failed, no retry, nothing patched.
    job_failed = wait_until(lambda: kube.job_condition(namespace, "bad-data", "Failed"), 20, what="Job Failed")
    assert job_failed["reason"] == "PodFailurePolicy"
    job = kube.job(namespace, "bad-data")
    assert job["spec"]["parallelism"] == 1 and "activeDeadlineSeconds" not in job["spec"]
    time.sleep(2)
    assert len(kube.pods(namespace, "bad-data")) == 1  # the failed pod stays, for its logs


def test_schema_rejects_invalid_specs(kube, namespace, operator):
    with pytest.raises(ApiError) as err:
        kube.create_lft(namespace, "r-zero", spec(lora={"r": 0}))
    assert err.value.status == 422
    assert "spec.lora.r" in err.value.message and "1" in err.value.message
    with pytest.raises(ApiError) as err:
        kube.create_lft(namespace, "lr", spec(training={"learningRate": 0}))
    assert "spec.training.learningRate" in err.value.message
    with pytest.raises(ApiError) as err:
        kube.create_lft(namespace, "quant", spec(lora={"quantization": "2bit"}))
    assert "spec.lora.quantization" in err.value.message and "4bit" in err.value.message
    with pytest.raises(ApiError) as err:
        raw = spec()
        del raw["output"]
        kube.create_lft(namespace, "no-output", raw)
    assert "spec.output" in err.value.message and "Required" in err.value.message
    with pytest.raises(ApiError) as err:
        kube.create_lft(namespace, "n" * 56, spec())
    assert "metadata.name" in err.value.message
    # Defaults are applied by the API server.
    body = kube.create_lft(namespace, "defaults", spec())
    assert body["spec"]["lora"]["r"] == 16 and body["spec"]["runPolicy"]["backoffLimit"] == 3


def test_qlora_on_cpu_is_refused_at_apply_and_a_missing_secret_is_the_kubelet_s_message(kube, namespace, operator):
    # A cross-field rule is the API server's (a CEL rule of the CRD): nothing is stored, so nothing is created.
    with pytest.raises(ApiError) as refused:
        kube.create_lft(namespace, "qlora-cpu", spec(lora={"quantization": "4bit"}))
    assert refused.value.status == 422 and "needs a GPU" in refused.value.message
    assert "spec.lora.quantization" in refused.value.message
    assert kube.lft(namespace, "qlora-cpu") is None and kube.jobs(namespace, "qlora-cpu") == []

    # The operator holds no Secret permission: a missing storage Secret is the kubelet's to find, and
    # the status passes on what it says.
    kube.create_lft(namespace, "no-secret", spec(storageSecretRef={"name": "s3-creds"}))
    pod = kube.wait_for_pod(namespace, "no-secret")
    assert pod["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3-creds", "optional": False}}]
    kube.kubelet_bind(pod)
    kube.kubelet_waiting(pod, "CreateContainerConfigError", 'secret "s3-creds" not found')
    status = kube.wait_lft(
        namespace, "no-secret", lambda s: cond(s, "Running").get("reason") == "CreateContainerConfigError"
    )["status"]
    assert status["phase"] == "Pending" and 'secret "s3-creds" not found' in status["message"]


def test_a_tracking_secret_reaches_the_pod_unread_and_a_missing_one_is_the_kubelet_s_message(kube, namespace, operator):
    # No Secret permission (as for the storage Secret): the tracker's Secret is passed to the pod as
    # envFrom and as a volume whose values the trainer masks; a missing one is reported by the kubelet.
    training = {"reportTo": ["mlflow"], "mlflow": {"trackingUri": "http://mlflow:5000",
                                                   "credentialsSecretRef": {"name": "mlflow-creds"}}}
    kube.create_lft(namespace, "tracked", spec(training=training))
    pod = kube.wait_for_pod(namespace, "tracked")
    (container,) = pod["spec"]["containers"]
    assert {"secretRef": {"name": "mlflow-creds", "optional": False}} in container["envFrom"]
    volume = next(v for v in pod["spec"]["volumes"] if v.get("secret", {}).get("secretName") == "mlflow-creds")
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    dirs = next(e["value"] for e in container["env"] if e["name"] == "LFT_SECRET_DIRS").split(":")
    assert mount["readOnly"] and mount["mountPath"] in dirs
    kube.kubelet_bind(pod)
    kube.kubelet_waiting(pod, "CreateContainerConfigError", 'secret "mlflow-creds" not found')
    status = kube.wait_lft(
        namespace, "tracked", lambda s: cond(s, "Running").get("reason") == "CreateContainerConfigError"
    )["status"]
    assert status["phase"] == "Pending" and 'secret "mlflow-creds" not found' in status["message"]


def test_suspend_checkpoints_and_resume_starts_a_new_attempt(kube, namespace, operator):
    kube.create_lft(namespace, "pausable", spec())
    pod = run_pod(kube, namespace, "pausable")
    kube.wait_lft(namespace, "pausable", lambda s: s.get("phase") == "Running")

    kube.merge_patch(kube.lft_path(namespace, "pausable"), {"spec": {"suspend": True}})
    kube.wait_lft(namespace, "pausable", lambda s: is_true(s, "Suspended"))
    wait_until(lambda: kube.job(namespace, "pausable")["spec"].get("suspend") is True, 10, what="Job suspended")
    assert kube.job(namespace, "pausable")["spec"]["parallelism"] == 1
    # The Job controller deletes the pod gracefully; the "kubelet" lets the trainer checkpoint and exit 4.
    deleting = wait_until(
        lambda: next((p for p in kube.pods(namespace, "pausable") if p["metadata"].get("deletionTimestamp")), None),
        30,
        what="the pod's graceful deletion",
    )
    assert deleting["metadata"]["name"] == pod["metadata"]["name"]
    preempted = TerminationMessage(outcome="preempted", reason="Preempted", message="checkpoint at step 12").encode()
    kube.kubelet_exit(deleting, ExitCode.PREEMPTED, preempted)
    kube.kubelet_remove(deleting)
    status = kube.wait_lft(namespace, "pausable", lambda s: s.get("phase") == "Suspended")["status"]
    assert status["failedAttempts"] == 0
    assert status["attemptHistory"][0]["phase"] == "Stopped"
    assert not kube.job(namespace, "pausable")["status"].get("failed")  # a suspended pod is no failure to the Job
    wait_until(lambda: Reason.SUSPENDED in kube.event_reasons(namespace, "pausable"), 10)
    time.sleep(2)
    assert kube.pods(namespace, "pausable") == []  # no new pod while suspended

    kube.merge_patch(kube.lft_path(namespace, "pausable"), {"spec": {"suspend": False}})
    run_pod(kube, namespace, "pausable")
    status = kube.wait_lft(namespace, "pausable", lambda s: s.get("phase") == "Running" and s.get("attempts") == 2)[
        "status"
    ]
    assert not is_true(status, "Suspended")
    assert kube.job(namespace, "pausable")["spec"]["suspend"] is False
    wait_until(lambda: Reason.RESUMED in kube.event_reasons(namespace, "pausable"), 10)


def test_spec_change_after_start_is_refused_at_apply_and_run_policy_applied(kube, namespace, operator):
    kube.create_lft(namespace, "edited", spec())
    kube.wait_lft(namespace, "edited", lambda s: is_true(s, "Accepted"))
    # The CRD's immutability rule refuses the whole patch: runPolicy, which may change, is not applied either.
    with pytest.raises(ApiError) as refused:
        kube.merge_patch(
            kube.lft_path(namespace, "edited"), {"spec": {"lora": {"r": 64}, "runPolicy": {"backoffLimit": 7}}}
        )
    assert refused.value.status == 422
    assert "spec.lora cannot change once the training Job exists" in refused.value.message
    assert "create a new LoRAFineTune" in refused.value.message
    stored = kube.lft(namespace, "edited")
    assert stored["spec"]["lora"].get("r") != 64 and stored["spec"].get("runPolicy", {}).get("backoffLimit") != 7
    kube.merge_patch(kube.lft_path(namespace, "edited"), {"spec": {"runPolicy": {"backoffLimit": 7}}})
    wait_until(lambda: kube.job(namespace, "edited")["spec"]["backoffLimit"] == 7, 10, what="backoffLimit applied")
    assert not is_true(kube.lft(namespace, "edited")["status"], "SpecChangeIgnored")


def test_delete_garbage_collects_the_children(kube, namespace, operator):
    kube.create_lft(namespace, "doomed", spec())
    kube.wait_for_pod(namespace, "doomed")
    kube.delete(kube.lft_path(namespace, "doomed"))
    paths = [
        f"/apis/batch/v1/namespaces/{namespace}/jobs/doomed-trainer",
        f"/api/v1/namespaces/{namespace}/configmaps/doomed-trainer-config",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/doomed-trainer",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles/doomed-trainer",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings/doomed-trainer",
    ]
    wait_until(lambda: all(kube.get(p) is None for p in paths), 60, what="children garbage-collected")
    wait_until(lambda: kube.pods(namespace, "doomed") == [], 60, what="pods garbage-collected")
    assert kube.lft(namespace, "doomed") is None  # no finalizer held it


def test_ttl_after_finished_keeps_the_resource_and_its_status(kube, namespace, operator):
    kube.create_lft(namespace, "short-lived", spec(runPolicy={"ttlSecondsAfterFinished": 1}))
    pod = run_pod(kube, namespace, "short-lived")
    kube.kubelet_exit(pod, 0, SUCCESS)
    kube.wait_lft(namespace, "short-lived", lambda s: s.get("phase") == "Succeeded")
    job = kube.job(namespace, "short-lived")
    assert job is None or job["spec"]["ttlSecondsAfterFinished"] == 1
    wait_until(lambda: kube.job(namespace, "short-lived") is None, 30, what="Job deleted by its TTL")
    time.sleep(2)
    status = kube.lft(namespace, "short-lived")["status"]
    assert status["phase"] == "Succeeded" and status["adapter"]["uri"] == "s3://lft-out/run/adapter"


def test_created_suspended_starts_no_pod_until_resumed(kube, namespace, operator):
    kube.create_lft(namespace, "later", spec(suspend=True))
    status = kube.wait_lft(namespace, "later", lambda s: s.get("phase") == "Suspended")["status"]
    assert is_true(status, "Accepted") and is_true(status, "Suspended")
    assert kube.job(namespace, "later")["spec"]["suspend"] is True
    time.sleep(2)
    assert kube.pods(namespace, "later") == []
    kube.merge_patch(kube.lft_path(namespace, "later"), {"spec": {"suspend": False}})
    run_pod(kube, namespace, "later")
    kube.wait_lft(namespace, "later", lambda s: s.get("phase") == "Running" and s.get("attempts") == 1)


def test_an_evicted_pod_costs_no_retry_and_a_new_pod_resumes(kube, namespace, operator):
    kube.create_lft(namespace, "evicted", spec(runPolicy={"backoffLimit": 0}))
    pod = run_pod(kube, namespace, "evicted")
    kube.wait_lft(namespace, "evicted", lambda s: s.get("phase") == "Running")
    meta = pod["metadata"]
    kube.create(f"/api/v1/namespaces/{namespace}/pods/{meta['name']}/eviction",
                {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": meta["name"], "namespace": namespace}})
    # The API server marks the pod DisruptionTarget and deletes it; the trainer checkpoints and exits 4.
    evicted = wait_until(lambda: next((p for p in kube.pods(namespace, "evicted")
                                       if p["metadata"].get("deletionTimestamp")), None), 20, what="the eviction")
    assert any(c["type"] == "DisruptionTarget" for c in evicted["status"].get("conditions") or [])
    preempted = TerminationMessage(outcome="preempted", reason="Preempted", message="checkpoint at step 5").encode()
    kube.kubelet_exit(evicted, ExitCode.PREEMPTED, preempted)
    kube.kubelet_remove(evicted)
    # backoffLimit 0, yet a new pod: the podFailurePolicy ignored the disruption.
    run_pod(kube, namespace, "evicted")
    status = kube.wait_lft(namespace, "evicted", lambda s: s.get("phase") == "Running" and s.get("attempts") == 2)[
        "status"]
    assert status["failedAttempts"] == 0 and status["attemptHistory"][0]["phase"] == "Stopped"
    assert status["attemptHistory"][0]["reason"] == "EvictionByEvictionAPI"
    assert not kube.job(namespace, "evicted")["status"].get("failed")
