"""The operator runs with exactly the RBAC rules it documents (lft_operator.rbac), nothing more."""

from __future__ import annotations

import re
import uuid

import pytest

from lft_api.conditions import Reason
from lft_api.contract import TerminationMessage
from lft_operator.rbac import LEASE_RULES, OPERATOR_RULES
from tests.support.kube import Operator, wait_until
from tests.support.operator import SUCCESS, run_pod, service_account_kubeconfig, spec

pytestmark = pytest.mark.integration


def test_operator_works_with_its_documented_rbac_only(kube, tmp_path):
    # A namespace outside the session operator's lft-it-* pattern: only this operator acts here.
    ns = f"lftrbac-{uuid.uuid4().hex[:8]}"
    role = f"lft-operator-{ns}"
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    try:
        kube.create(
            f"/api/v1/namespaces/{ns}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "operator"}},
        )
        kube.create(
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": role},
                "rules": OPERATOR_RULES,
            },
        )
        kube.create(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": role},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": ns}],
            },
        )
        # Leader election: the Lease in the operator's own namespace, through a namespaced Role.
        lease_role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                      "metadata": {"name": "lease"}, "rules": LEASE_RULES}
        kube.create(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles", lease_role)
        kube.create(
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "lease"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "lease"},
                "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": ns}],
            },
        )
        kubeconfig = service_account_kubeconfig(kube, ns, "operator", tmp_path / "kubeconfig")
        kube.create(
            f"/api/v1/namespaces/{ns}/secrets",
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3"}, "stringData": {"K": "v"}},
        )
        op = Operator(kubeconfig, tmp_path / "operator.log", LFT_NAMESPACES=ns, LFT_LEADER_ELECTION_NAMESPACE=ns)
        op.start()
        try:
            kube.create_lft(ns, "least", spec(storageSecretRef={"name": "s3"}))
            pod = run_pod(kube, ns, "least")
            kube.wait_lft(ns, "least", lambda s: s.get("phase") == "Running")
            kube.kubelet_exit(pod, 0, SUCCESS)
            status = kube.wait_lft(ns, "least", lambda s: s.get("phase") == "Succeeded")["status"]
            assert status["adapter"]["uri"] == TerminationMessage.decode(SUCCESS).adapter.uri
            wait_until(
                lambda: {Reason.ACCEPTED, Reason.JOB_CREATED, Reason.STARTED, "Succeeded"} <= set(kube.event_reasons(ns, "least")), 15
            )
            logs = op.logs()
            assert "leads (Lease" in logs
            # "403" as a status, not inside a timestamp's microseconds (seen: "11:50:24.053403" failed this).
            assert not re.search(r"\b403\b", logs) and "Forbidden" not in logs and "forbidden" not in logs, logs[-2000:]
        finally:
            op.stop()
    finally:
        kube.delete(f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{role}")
        kube.delete(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{role}")
        kube.delete(f"/api/v1/namespaces/{ns}")
        kube.remove_pods(ns)
