"""Fixtures for integration tests against a real kube-apiserver (+ etcd + kube-controller-manager).

Start one with `tests/cluster/up.sh --api-only` (the Makefile/CI does). Without an API server
the tests that use these fixtures are skipped with that hint, unless LFT_REQUIRE_CLUSTER=1,
which makes them fail instead. Nothing runs containers in api-only mode: the tests play the
kubelet (tests/support/kube.py) on the pods the real Job controller creates.

    def test_x(kube, namespace, operator):
        kube.create_lft(namespace, "run", spec)
        pod = kube.wait_for_pod(namespace, "run")
        kube.kubelet_run(pod)                      # container running
        kube.kubelet_exit(pod, 0, message_json)    # container terminated
        kube.wait_lft(namespace, "run", lambda s: s.get("phase") == "Succeeded")
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.kube import (
    CRD_FILE,
    DEFAULT_KUBECONFIG,
    FAKE_NODE,
    LFT_API,
    NAMESPACE_PREFIX,
    Kube,
    Operator,
    fresh_namespace,
)
from tests.support.trainer_run import DATASET

# --- fixtures ---------------------------------------------------------------------------------


def _no_cluster(reason: str) -> None:
    message = f"no Kubernetes API server ({reason}): start one with tests/cluster/up.sh --api-only"
    if os.environ.get("LFT_REQUIRE_CLUSTER") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def kube() -> Kube:
    kubeconfig = os.environ.get("LFT_KUBECONFIG") or os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG
    if not Path(kubeconfig).exists():
        _no_cluster(f"{kubeconfig} does not exist")
    try:
        client = Kube(kubeconfig)
        client.request("GET", "/readyz")
    except Exception as e:  # noqa: BLE001 - any failure means: no usable API server
        _no_cluster(f"{type(e).__name__}: {e}")
    client.install_crd(yaml.safe_load(CRD_FILE.read_text()), f"{LFT_API}/lorafinetunes")
    _ensure_fake_node(client)
    return client


def _ensure_fake_node(kube: Kube) -> None:
    # A Node object so that pods can be bound (no kubelet behind it; tests play it).
    if kube.get(f"/api/v1/nodes/{FAKE_NODE}") is None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": FAKE_NODE, "labels": {"lft.test/node": FAKE_NODE}},
        }
        kube.create("/api/v1/nodes", node)


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    with fresh_namespace(kube) as name:
        yield name


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Phi-3 model and tokenizer, built offline (seconds)."""
    from lft_trainer.model import tiny_model as tiny

    return tiny.build(tmp_path_factory.mktemp("tiny") / "model", DATASET)


@pytest.fixture(scope="session")
def operator(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    # A short pod creation timeout: test_operator_failures waits for PodCreationTimeout.
    op = Operator(
        kube.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log", LFT_POD_CREATION_TIMEOUT_SECONDS="20"
    )
    try:
        op.start()
        warm_up(kube)
        yield op
    finally:
        # Also when the warm-up fails: a leftover operator (its lft-it-* pattern) would act on every later
        # test session's namespaces (seen: one ran on for 10 minutes after a warm-up timeout).
        op.stop()


def warm_up(kube: Kube) -> None:
    """Live is not yet working: wait until the operator has reconciled one resource (its watches are up)
    before the first test starts its clock. On a loaded machine that first reconcile took over 30 s."""
    from tests.support.operator import spec

    ns = f"{NAMESPACE_PREFIX}warmup-{uuid.uuid4().hex[:6]}"
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    try:
        kube.create_lft(ns, "warmup", spec())
        kube.wait_lft(ns, "warmup", lambda s: s.get("phase"), timeout=180, what="the operator's first reconcile")
    finally:
        kube.delete(f"/api/v1/namespaces/{ns}")
        kube.remove_pods(ns)
