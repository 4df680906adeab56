"""The trainer's status sink against a real kube-apiserver, with the ServiceAccount and Role that the
operator creates for the trainer pod: progress lands in status, operator-owned fields stay, and the
token cannot patch another resource's status."""

from __future__ import annotations

import base64
import urllib.error
from pathlib import Path

import pytest
import yaml

from lft_api.contract import CheckpointRef
from lft_trainer import progress
from tests.support.kube import Kube
from tests.support.operator import spec

pytestmark = pytest.mark.integration


def _service_account_dir(kube: Kube, namespace: str, name: str, dest: Path) -> Path:
    """What the kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount (1.20: a token Secret)."""

    secret = kube.service_account_token_secret(namespace, name)
    dest.mkdir(parents=True)
    for key in ("token", "ca.crt"):
        (dest / key).write_bytes(base64.b64decode(secret["data"][key]))
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
