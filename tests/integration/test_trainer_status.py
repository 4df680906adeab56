"""The trainer's status sink against a real kube-apiserver, with the ServiceAccount and Role that the
operator creates for the trainer pod: progress lands in status, operator-owned fields stay, and the
token cannot patch another resource's status."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import yaml

from lft_api import contract
from lft_api.conditions import Reason
from lft_api.contract import CheckpointRef, Progress, TerminationMessage
from lft_trainer.reporting import progress
from tests.support.kube import Kube, wait_until
from tests.support.operator import SUCCESS, cond, run_pod, spec

pytestmark = pytest.mark.integration


def _service_account_dir(kube: Kube, namespace: str, name: str, dest: Path) -> Path:
    """What the kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount: a bound token and the CA."""
    dest.mkdir(parents=True)
    (dest / "token").write_text(kube.service_account_token(namespace, name))
    (dest / "ca.crt").write_bytes(kube.cluster_ca())
    return dest


def test_status_sink_patches_progress_with_the_trainer_service_account(kube, namespace, operator, tmp_path):
    kube.create_lft(namespace, "st", spec())
    kube.create_lft(namespace, "other", spec())
    pod = kube.wait_for_pod(namespace, "st")
    sa_dir = _service_account_dir(kube, namespace, pod["spec"]["serviceAccountName"], tmp_path / "sa")
    server = yaml.safe_load(Path(kube.kubeconfig).read_text())["clusters"][0]["cluster"]["server"]
    kube.wait_lft(namespace, "st", lambda s: s.get("phase"))

    client = progress.KubeStatusClient("st", namespace, api_url=server, sa_dir=str(sa_dir))
    sink = progress.StatusSink(client.patch, min_interval=60.0)
    reporter = progress.Reporter([sink], total_steps=30)
    reporter.advanced(10, 30, None)
    reporter.step_logged(1.234567, 2e-4, None)
    reporter.advanced(11, 30, None)
    reporter.step_logged(1.234567, 2e-4, None)  # rate-limited: not sent
    reporter.checkpoint_uploaded(CheckpointRef(step=11, uri="s3://lft-out/run/checkpoints/checkpoint-11"))
    assert sink.failures == 0 and sink.patches == 2

    status = kube.wait_lft(namespace, "st", lambda s: s.get("latestCheckpoint"))["status"]
    assert status["progress"]["step"] == 11 and status["progress"]["totalSteps"] == 30
    assert status["progress"]["percent"] == pytest.approx(36.7)
    assert status["metrics"]["loss"] == 1.2346 and status["metrics"]["learningRate"] == 2e-4
    assert status["latestCheckpoint"] == {"step": 11, "uri": "s3://lft-out/run/checkpoints/checkpoint-11"}
    assert status.get("phase")  # the operator's fields survive the trainer's merge patches

    # The Role names one resource: the same token cannot touch another LoRAFineTune's status.
    foreign = progress.KubeStatusClient("other", namespace, api_url=server, sa_dir=str(sa_dir))
    with pytest.raises(urllib.error.HTTPError) as err:
        foreign.patch(reporter.event("log").status_body())
    assert err.value.code == 403


def test_the_operator_reverts_trainer_writes_of_its_fields_and_of_another_run(kube, namespace, operator, tmp_path):
    """RBAC lets a trainer patch its resource's whole status: the operator puts back what only it may
    write (phase, conditions, adapter), and removes trainer fields sent under another run's UID."""
    kube.create_lft(namespace, "rv", spec())
    pod = run_pod(kube, namespace, "rv")
    kube.wait_lft(namespace, "rv", lambda s: s.get("phase") == "Running")
    uid = kube.lft(namespace, "rv")["metadata"]["uid"]
    sa_dir = _service_account_dir(kube, namespace, pod["spec"]["serviceAccountName"], tmp_path / "sa")
    server = yaml.safe_load(Path(kube.kubeconfig).read_text())["clusters"][0]["cluster"]["server"]
    trainer = progress.KubeStatusClient("rv", namespace, api_url=server, sa_dir=str(sa_dir), uid=uid)

    trainer.patch(contract.status_patch(Progress.build(5, 30)))
    kube.wait_lft(namespace, "rv", lambda s: (s.get("progress") or {}).get("step") == 5)
    # The same token writes the operator's fields: accepted by the API server, reverted by the operator.
    trainer.patch({"status": {"phase": "Succeeded", "conditions": [],
                              "adapter": {"uri": "s3://elsewhere/adapter", "files": []}}})
    status = kube.wait_lft(
        namespace, "rv", lambda s: s.get("phase") == "Running" and s.get("conditions") and "adapter" not in s, 20
    )["status"]
    assert cond(status, "Running")["status"] == "True" and cond(status, "Succeeded")["status"] == "False"
    assert status["progress"]["step"] == 5  # the trainer's own fields stay
    wait_until(lambda: Reason.STATUS_REVERTED in kube.event_reasons(namespace, "rv"), 15)

    # A pod of an earlier resource of the same name reports under its UID: ignored and removed.
    earlier = progress.KubeStatusClient("rv", namespace, api_url=server, sa_dir=str(sa_dir), uid="uid-of-an-earlier-rv")
    earlier.patch(contract.status_patch(Progress.build(29, 30)))
    status = kube.wait_lft(namespace, "rv", lambda s: "progress" not in s and "trainerUid" not in s, 20)["status"]
    assert status["phase"] == "Running"
    trainer.patch(contract.status_patch(Progress.build(6, 30)))
    kube.wait_lft(namespace, "rv", lambda s: (s.get("progress") or {}).get("step") == 6)

    # The run ends as its pod says, not as anyone wrote.
    kube.kubelet_exit(pod, 0, SUCCESS)
    status = kube.wait_lft(namespace, "rv", lambda s: s.get("phase") == "Succeeded")["status"]
    assert status["adapter"]["uri"] == TerminationMessage.decode(SUCCESS).adapter.uri
    assert status["trainerUid"] == uid
