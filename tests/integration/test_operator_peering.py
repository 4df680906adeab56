"""HA: two operators with kopf peering; only the one with the higher priority acts."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.support.kube import Kube, Operator, wait_until
from tests.support.operator import is_true, spec

pytestmark = pytest.mark.integration


def _peering_crds(kube: Kube) -> None:
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    for scope, kind in (("Cluster", "ClusterKopfPeering"), ("Namespaced", "KopfPeering")):
        plural = f"{kind.lower()}s"
        if kube.get(f"{path}/{plural}.kopf.dev") is not None:
            continue
        kube.create(
            path,
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{plural}.kopf.dev"},
                "spec": {
                    "scope": scope,
                    "group": "kopf.dev",
                    "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                    "versions": [
                        {
                            "name": "v1",
                            "served": True,
                            "storage": True,
                            "schema": {
                                "openAPIV3Schema": {
                                    "type": "object",
                                    "properties": {
                                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                                    },
                                }
                            },
                        }
                    ],
                },
            },
        )
    wait_until(lambda: kube.get("/apis/kopf.dev/v1/kopfpeerings") is not None, 30, what="peering CRDs served")


def test_only_the_leading_peer_acts(kube, tmp_path):
    _peering_crds(kube)
    ns = f"lftpeer-{uuid.uuid4().hex[:8]}"  # outside the session operator's lft-it-* pattern
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    peering = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "lft"}}
    kube.create(f"/apis/kopf.dev/v1/namespaces/{ns}/kopfpeerings", peering)
    leader = Operator(
        kube.kubeconfig, tmp_path / "leader.log", LFT_NAMESPACES=ns, LFT_PEERING_NAME="lft", LFT_PRIORITY="100"
    )
    standby = Operator(
        kube.kubeconfig, tmp_path / "standby.log", LFT_NAMESPACES=ns, LFT_PEERING_NAME="lft", LFT_PRIORITY="1"
    )
    try:
        leader.start()
        standby.start()
        peers = f"/apis/kopf.dev/v1/namespaces/{ns}/kopfpeerings/lft"
        wait_until(lambda: len((kube.get(peers) or {}).get("status") or {}) == 2, 30, what="both peers registered")
        kube.create_lft(ns, "ha", spec())
        kube.wait_lft(ns, "ha", lambda s: is_true(s, "Accepted"))
        time.sleep(3)
        assert len(kube.jobs(ns, "ha")) == 1
        assert "created Job" in leader.logs() and "created Job" not in standby.logs()
    finally:
        standby.stop()
        leader.stop()
        kube.delete(f"/api/v1/namespaces/{ns}")
        kube.remove_pods(ns)
