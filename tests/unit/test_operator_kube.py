"""The operator's REST client (lft_operator.kube): what every write asks of the API server.

The seam is Kube.request, the one method that talks HTTP: the tests record what the write methods hand it.
"""

from __future__ import annotations

import asyncio

import pytest
from kubernetes.client import Configuration

from lft_api.conditions import Reason
from lft_api.contract import OPERATOR_FIELD_MANAGER
from lft_operator import kube
from lft_operator.kube import Kube
from lft_operator.status import classify_create_error


def recording_client() -> tuple[Kube, list[tuple[str, str, dict]]]:
    cfg = Configuration()
    cfg.host = "https://kube.invalid"
    client = Kube(cfg)
    sent: list[tuple[str, str, dict]] = []

    async def request(method: str, path: str, *, params=None, **_kw):
        sent.append((method, path, dict(params or {})))
        return {}

    client.request = request  # type: ignore[method-assign]
    return client, sent


@pytest.mark.parametrize("write", ["create", "replace", "merge_patch", "json_patch"])
def test_every_create_update_and_patch_asks_for_strict_field_validation(write: str) -> None:
    """An unknown or duplicate field the API server would drop silently (a typo in a pass-through part of
    the pod template, a field an older server does not know) fails the request instead: what the policy
    judged is what is stored."""
    client, sent = recording_client()
    body = [] if write == "json_patch" else {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    asyncio.run(getattr(client, write)("/api/v1/namespaces/ns/configmaps", body))
    ((_, _, params),) = sent
    assert params == {"fieldManager": OPERATOR_FIELD_MANAGER, "fieldValidation": "Strict"}
    assert kube.WRITER["fieldValidation"] == "Strict"


def test_reads_and_deletes_send_no_field_validation() -> None:
    client, sent = recording_client()
    asyncio.run(client.get("/api/v1/namespaces/ns/configmaps/x"))
    asyncio.run(client.list_items("/api/v1/namespaces/ns/pods", labelSelector="a=b"))
    asyncio.run(client.delete("/apis/batch/v1/namespaces/ns/jobs/j"))
    assert all("fieldValidation" not in params for _, _, params in sent)


def test_a_job_refused_by_strict_field_validation_is_invalid_and_not_retried() -> None:
    # What a 1.25+ API server answers (400 BadRequest) for a field it does not know, e.g. a typo inside
    # spec.affinity, which the operator passes through unread.
    message = ('Job in version "v1" cannot be handled as a Job: strict decoding error: unknown field '
               '"spec.template.spec.affinity.nodeAffinity.requiredDuringScheduling"')
    problem = classify_create_error(400, message, "BadRequest")
    assert problem is not None and problem.reason == Reason.JOB_INVALID
    assert "strict decoding error" in problem.message and "nodeAffinity.requiredDuringScheduling" in problem.message


@pytest.mark.parametrize(
    ("path", "resource"),
    [
        ("/api/v1/namespaces/ns/configmaps", "configmaps"),
        ("/api/v1/namespaces/ns/events", "events"),
        ("/apis/batch/v1/namespaces/ns/jobs/j", "jobs"),
        ("/apis/finetune.dev/v1alpha1/namespaces/ns/lorafinetunes/r/status", "lorafinetunes/status"),
        ("/apis/coordination.k8s.io/v1/namespaces/ns/leases/l", "leases"),
        ("/api/v1/namespaces/ns", "namespaces"),
        ("/api/v1/namespaces", "namespaces"),
        ("/apis/finetune.dev/v1alpha1/lorafinetunes", "lorafinetunes"),
        ("/api", "other"),
    ],
)
def test_requests_are_counted_by_the_resource_they_address(path: str, resource: str) -> None:
    assert kube.path_resource(path) == resource
