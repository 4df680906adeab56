"""Fixtures for the end-to-end scenarios: the kind cluster (hack/kind/up.sh, docs/kind.md), the operator
deployed by Helm (hack/deploy.sh), the CPU trainer image and the S3 server (hack/s3.sh).

Without a cluster these tests skip, unless LFT_REQUIRE_CLUSTER=1 (CI), where they fail."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import boto3
import pytest

from tests.support import faults
from tests.support.kubectl import Kube
from tests.support.scenarios import S3_SECRET_KEY

REPO = Path(__file__).resolve().parents[2]
S3_ACCESS_KEY = "e2e-access-key"
# One fixed namespace per scenario: readable in `kubectl get lft -A`, and an operator installed
# with a namespace list (LFT_WATCH_NAMESPACES in hack/deploy.sh) can be given exactly these.
E2E_NAMESPACES = {
    "test_happy_path": "e2e-happy",
    "test_pod_killed_mid_run_resumes": "e2e-killed",
    "test_suspend_then_resume": "e2e-suspend",
    "test_bad_dataset_fails_fast_without_retries": "e2e-baddata",
    "test_delete_while_running_collects_children_keeps_checkpoints": "e2e-delete",
    "test_operator_pod_deleted_mid_run": "e2e-oprestart",
    "test_planted_secrets_reach_no_output": "e2e-planted",
    "test_leader_pod_deleted_mid_run_standby_takes_over": "e2e-leaderloss",
    # test_faults.py
    "test_control_plane_restarted_mid_run": "e2e-cprestart",
    "test_node_runtime_restarted_mid_run": "e2e-noderestart",
    "test_object_store_unreachable_mid_run": "e2e-s3cut",
    "test_operator_watch_cut_then_restored": "e2e-watchcut",
    # test_datasets.py
    "test_function_calling_dataset_trains": "e2e-tools",
    "test_sharegpt_file_trains": "e2e-sharegpt",
    # test_refusals.py
    "test_same_output_uri_second_refused_first_succeeds": "e2e-outputinuse",
    "test_reserved_volume_name_fails_job_invalid": "e2e-jobinvalid",
    "test_pod_quota_exceeded_pending_pod_creation_failed": "e2e-quota",
    "test_host_path_volume_refused_by_the_default_policy": "e2e-policy",
    # test_tenant.py
    "test_tenant_attacks_are_refused_before_anything_is_created": "e2e-tenant",
    "test_a_secret_in_an_output_file_fails_the_run_before_any_upload": "e2e-smuggle",
    "test_a_refused_resource_claims_no_output_in_another_namespace": "e2e-claims",
    # test_tracking.py
    "test_mlflow_and_tensorboard_from_a_pod": "e2e-tracking",
    # test_multinode.py
    "test_two_pods_train_one_run_to_succeeded": "e2e-multinode",
    "test_two_pods_of_two_processes_train_on_four_distinct_shards": "e2e-multiquad",
    "test_one_pod_killed_ends_the_attempt_and_every_rank_resumes": "e2e-multikill",
    # test_job_primitives.py
    "test_invalid_input_ends_the_job_by_its_pod_failure_policy": "e2e-policyfail",
    "test_an_evicted_pod_costs_no_retry_and_the_run_succeeds": "e2e-evicted",
    # test_release.py
    "test_the_operator_and_the_trainer_come_from_the_released_chart_and_registry": "e2e-release",
    # kind/test_node_fault.py (a worker's container stopped)
    "test_a_stopped_worker_ends_the_attempt_and_the_run_resumes_to_succeeded": "e2e-nodefault",
    # test_kueue.py (its own suite: Kueue running, the operator's integration on)
    "test_second_run_queued_on_quota_then_both_succeed": "e2e-kueue-quota",
    "test_higher_priority_preempts_lower_which_resumes_from_its_checkpoint": "e2e-kueue-preempt",
    "test_two_node_run_under_quota_for_one_pod_stays_wholly_queued": "e2e-kueue-gang",
    "test_run_without_a_queue_behaves_as_today": "e2e-kueue-none",
    "test_namespace_default_local_queue_queues_a_run_without_a_queue": "e2e-kueue-default",
}


POD_SECURITY_RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


def _require(condition: bool, why: str) -> None:
    if condition:
        return
    if os.environ.get("LFT_REQUIRE_CLUSTER") == "1":
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="session")
def kube() -> Kube:
    k = Kube.from_env()
    _require(k.available(), f"no cluster at {k.kubeconfig} (make cluster-up)")
    nodes = k.json("get", "nodes")["items"]
    _require(bool(nodes), "the cluster has no node (make cluster-up)")
    deploy = k.run("get", "deploy", "-n", "lft-system", "-l", "app.kubernetes.io/name=lora-finetune-operator",
                   "-o", "name", check=False)
    _require(bool(deploy.stdout.strip()), "operator not deployed (make deploy)")
    return k


@pytest.fixture(scope="session")
def s3_host_endpoint() -> str:
    """The S3 endpoint as this host reaches it: LFT_S3_ENDPOINT (kind: a port-forward), else hack/s3.sh's."""
    if os.environ.get("LFT_S3_ENDPOINT"):
        return os.environ["LFT_S3_ENDPOINT"]
    out = subprocess.run(["bash", str(REPO / "hack/s3.sh"), "env"], capture_output=True, text=True)
    env = dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
    url = env.get("LFT_S3_ENDPOINT", "")
    _require(out.returncode == 0 and bool(url), f"no S3 endpoint: {out.stderr.strip()}")
    return url


@pytest.fixture(scope="session")
def bridge_ip(s3_host_endpoint) -> str:
    """The host's address on the Docker bridge: pods reach host servers bound there (hack/s3.sh's host)."""
    return s3_host_endpoint.split("://", 1)[1].rsplit(":", 1)[0]


@pytest.fixture(scope="session")
def s3_endpoint(s3_host_endpoint) -> str:
    """The S3 endpoint as the trainer pods reach it (the same URL on the local cluster)."""
    return os.environ.get("LFT_S3_POD_ENDPOINT", s3_host_endpoint)


@pytest.fixture(scope="session")
def s3(s3_host_endpoint):
    client = boto3.client("s3", endpoint_url=s3_host_endpoint, region_name="us-east-1",
                          aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY)
    try:
        client.head_bucket(Bucket="lft")
    except Exception as e:  # noqa: BLE001 - any failure means no usable server
        _require(False, f"S3 server at {s3_host_endpoint} not usable: {e}")
    return client


@pytest.fixture
def namespace(kube: Kube, s3, request):
    """A fresh namespace per scenario holding the storage credentials Secret; deleted afterwards.
    The scenario's output prefix (e2e/<namespace>/) starts empty: a run resumes from checkpoints it finds."""
    name = E2E_NAMESPACES[request.node.name]
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="lft", Prefix=f"e2e/{name}/"):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket="lft", Key=obj["Key"])
    if kube.run("get", "namespace", name, check=False).returncode == 0:  # left by an earlier run
        kube.run("delete", "namespace", name, "--timeout=180s")
    kube.run("create", "namespace", name)
    # Every scenario's pods pass the API server's own Pod Security admission at "restricted".
    kube.run("label", "namespace", name, *(f"{k}={v}" for k, v in POD_SECURITY_RESTRICTED.items()))
    kube.run("create", "secret", "generic", "s3-credentials", "-n", name,
             f"--from-literal=AWS_ACCESS_KEY_ID={S3_ACCESS_KEY}",
             f"--from-literal=AWS_SECRET_ACCESS_KEY={S3_SECRET_KEY}")
    yield name
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        print(kube.run("get", "lft,job,pod", "-n", name, "-o", "wide", check=False).stdout)
        print(kube.run("describe", "lft", "-n", name, check=False).stdout)
        print(kube.run("logs", "-n", name, "-l", "finetune.dev/name", "--tail", "80", check=False).stdout)
        print(kube.run("logs", "-n", "lft-system", "deploy/lora-finetune-operator", "--tail", "80",
                       check=False).stdout)
    kube.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def pytest_terminal_summary(terminalreporter):
    """The fault scenarios' SCENARIO lines (time to the final state) once more, quotable from any run."""
    if faults.RESULTS:
        terminalreporter.section("e2e scenario timings")
        for line in faults.RESULTS:
            terminalreporter.write_line(line)
