"""kopf holds every handler until each indexed resource in each watched namespace has listed once. A
namespace that goes away before its first listing must not hold the operator forever (kopf 1.45
stranded that namespace's toggle: no resource in any namespace was ever reconciled again)."""

from __future__ import annotations

import uuid

import pytest

from lft_operator.rbac import LEASE_RULES, OPERATOR_RULES
from tests.support.kube import Operator, wait_until
from tests.support.operator import service_account_kubeconfig, spec

pytestmark = pytest.mark.integration

RBAC = "/apis/rbac.authorization.k8s.io/v1"
CLUSTER_SCOPED = {"namespaces", "customresourcedefinitions"}


def _binding(kind: str, name: str, role_kind: str, role: str, sa_namespace: str) -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": sa_namespace}],
    }


def _grant_only(kube, ns: str, role: str) -> None:
    """The operator's ServiceAccount in `ns` may observe namespaces cluster-wide, but read and write
    resources in `ns` only: every other namespace of its pattern is forbidden to it."""
    kube.create(f"/api/v1/namespaces/{ns}/serviceaccounts",
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "operator"}})
    cluster_rules = [r for r in OPERATOR_RULES if CLUSTER_SCOPED & set(r["resources"])]
    for name, rules in ((role, OPERATOR_RULES), (f"{role}-cluster", cluster_rules)):
        kube.create(f"{RBAC}/clusterroles",
                    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                     "metadata": {"name": name}, "rules": rules})
    kube.create(f"{RBAC}/clusterrolebindings", _binding("ClusterRoleBinding", role, "ClusterRole", f"{role}-cluster", ns))
    kube.create(f"{RBAC}/namespaces/{ns}/rolebindings", _binding("RoleBinding", "operator", "ClusterRole", role, ns))
    kube.create(f"{RBAC}/namespaces/{ns}/roles", {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                                                 "metadata": {"name": "lease"}, "rules": LEASE_RULES})
    kube.create(f"{RBAC}/namespaces/{ns}/rolebindings", _binding("RoleBinding", "lease", "Role", "lease", ns))


def test_a_namespace_gone_before_its_first_listing_does_not_stall_the_others(kube, tmp_path):
    # Own prefix: outside the session operator's lft-it-* pattern.
    prefix = f"lftgate-{uuid.uuid4().hex[:6]}-"
    good, gone = f"{prefix}a", f"{prefix}b"
    role = f"lft-operator-{prefix}gate"
    for ns in (good, gone):
        kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    op = None
    try:
        _grant_only(kube, good, role)
        kubeconfig = service_account_kubeconfig(kube, good, "operator", tmp_path / "kubeconfig")
        op = Operator(kubeconfig, tmp_path / "operator.log", LFT_NAMESPACES=f"{prefix}*",
                      LFT_LEADER_ELECTION_NAMESPACE=good)
        op.start()
        kube.create_lft(good, "run", spec())
        # The listings in `gone` are refused (403) and retried: deleted now, its watchers stop unlisted.
        wait_until(lambda: f"namespaces/{gone}/" in op.logs(), 30, what="a refused listing in the second namespace")
        kube.delete(f"/api/v1/namespaces/{gone}")
        wait_until(lambda: kube.get(f"/api/v1/namespaces/{gone}") is None, 60, what="namespace deleted")
        kube.wait_lft(good, "run", lambda s: s.get("phase"), timeout=40, what="a reconcile in the readable namespace")
    finally:
        if op is not None:
            op.stop()
        kube.delete(f"{RBAC}/clusterrolebindings/{role}")
        for name in (role, f"{role}-cluster"):
            kube.delete(f"{RBAC}/clusterroles/{name}")
        for ns in (good, gone):
            kube.delete(f"/api/v1/namespaces/{ns}")
            kube.remove_pods(ns)
