"""The Helm chart on a real API server: `helm install` succeeds, and the operator does its whole job
with the ServiceAccount and RBAC the chart creates (namespaced mode: RoleBindings per watched namespace).

The operator runs here as a subprocess authenticated with the chart's ServiceAccount token (the chart's
Deployment is scaled to 0: api-only mode runs no containers).
"""

from __future__ import annotations

import shutil
import subprocess
import uuid

import pytest
import yaml

from lft_api.contract import TerminationMessage
from lft_operator import builders
from tests.support.kube import Kube, Operator, wait_until
from tests.support.operator import SUCCESS, run_pod, service_account_kubeconfig, spec
from tests.support.tools import CHART, HELM

pytestmark = pytest.mark.integration
RBAC = "/apis/rbac.authorization.k8s.io/v1"


def helm(kube: Kube, *args: str) -> str:
    proc = subprocess.run(
        [HELM, "--kubeconfig", kube.kubeconfig, *args], check=False, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def allowed(kube: Kube, sa: tuple[str, str], namespace: str, verb: str, resource: str, group: str = "finetune.dev",
            subresource: str = "") -> bool:
    """A SubjectAccessReview: may ServiceAccount (namespace, name) do `verb` on `resource` in `namespace`?"""
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
        "user": f"system:serviceaccount:{sa[0]}:{sa[1]}",
        "groups": ["system:serviceaccounts", f"system:serviceaccounts:{sa[0]}", "system:authenticated"],
        "resourceAttributes": {"namespace": namespace, "verb": verb, "group": group, "resource": resource,
                               "subresource": subresource}}}
    return bool(kube.create("/apis/authorization.k8s.io/v1/subjectaccessreviews", review)["status"].get("allowed"))


def _user_roles_aggregate(kube: Kube, namespace: str, operator_sa: tuple[str, str]) -> None:
    """The chart's aggregated ClusterRoles reach the built-in edit and view roles; no Secret access for the
    operator; nobody but the operator and the trainers writes status."""
    for user, role in (("dev", "edit"), ("viewer", "view")):
        kube.create(f"/api/v1/namespaces/{namespace}/serviceaccounts",
                    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": user}})
        kube.create(f"{RBAC}/namespaces/{namespace}/rolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": user},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": user, "namespace": namespace}]})
    dev, viewer = (namespace, "dev"), (namespace, "viewer")
    wait_until(lambda: allowed(kube, dev, namespace, "create", "lorafinetunes"), 30, what="edit aggregation")
    wait_until(lambda: allowed(kube, viewer, namespace, "list", "lorafinetunes"), 30, what="view aggregation")
    assert allowed(kube, dev, namespace, "delete", "lorafinetunes")
    assert not allowed(kube, viewer, namespace, "create", "lorafinetunes")
    for sa in (dev, viewer):
        assert not allowed(kube, sa, namespace, "patch", "lorafinetunes", subresource="status")
    for verb in ("get", "list", "watch"):
        assert not allowed(kube, operator_sa, namespace, verb, "secrets", group="")
        assert not allowed(kube, operator_sa, "kube-system", verb, "secrets", group="")


def test_operator_works_with_the_charts_rbac(kube: Kube, tmp_path) -> None:
    suffix = uuid.uuid4().hex[:6]
    system_ns, watched_ns, release = f"lftchart-sys-{suffix}", f"lftchart-{suffix}", f"lftc{suffix}"
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": watched_ns}})
    try:
        out = helm(
            kube,
            "install",
            release,
            str(CHART),
            "--namespace",
            system_ns,
            "--create-namespace",
            "--set",
            "crds.install=false",  # the session fixture installed the CRD already: the admin-managed mode
            "--set",
            "replicaCount=0",
            "--set",
            f"watchNamespaces={{{watched_ns}}}",
            "--wait=false",
        )
        assert "STATUS: deployed" in out
        # The rendered RBAC is real: bound in the watched namespace only.
        fullname = f"{release}-lora-finetune-operator"
        binding = kube.get(f"{RBAC}/namespaces/{watched_ns}/rolebindings/{fullname}")
        assert binding and binding["subjects"][0]["namespace"] == system_ns
        assert kube.get(f"{RBAC}/clusterrolebindings/{fullname}") is None

        _user_roles_aggregate(kube, watched_ns, (system_ns, fullname))
        kubeconfig = service_account_kubeconfig(kube, system_ns, fullname, tmp_path / "kubeconfig")
        kube.create(
            f"/api/v1/namespaces/{watched_ns}/secrets",
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3"}, "stringData": {"K": "v"}},
        )
        # Leader election on the chart's Lease, with the chart's namespaced Role for it.
        op = Operator(kubeconfig, tmp_path / "operator.log", LFT_NAMESPACES=watched_ns,
                      LFT_LEADER_ELECTION_NAMESPACE=system_ns, LFT_LEADER_ELECTION_LEASE_NAME=fullname)
        op.start()
        try:
            kube.create_lft(watched_ns, "viachart", spec(storageSecretRef={"name": "s3"}))
            pod = run_pod(kube, watched_ns, "viachart")
            kube.wait_lft(watched_ns, "viachart", lambda s: s.get("phase") == "Running")
            kube.kubelet_exit(pod, 0, SUCCESS)
            status = kube.wait_lft(watched_ns, "viachart", lambda s: s.get("phase") == "Succeeded")["status"]
            assert status["adapter"]["uri"] == TerminationMessage.decode(SUCCESS).adapter.uri
            # The per-run Role was created with the chart's RBAC (the escalation check passed).
            role = kube.get(f"{RBAC}/namespaces/{watched_ns}/roles/{builders.child_name('viachart')}")
            assert role and role["rules"][0]["resourceNames"] == ["viachart"]
            reasons = {"Accepted", "JobCreated", "Succeeded"}
            wait_until(lambda: reasons <= set(kube.event_reasons(watched_ns, "viachart")), 15)
            logs = op.logs()
            lease = kube.get(f"/apis/coordination.k8s.io/v1/namespaces/{system_ns}/leases/{fullname}")
            assert lease["spec"]["holderIdentity"].startswith("operator_") and "leads (Lease" in logs
            assert "403" not in logs and "orbidden" not in logs and "Not enough permissions" not in logs, logs[-2000:]
        finally:
            op.stop()
    finally:
        subprocess.run(
            [HELM, "--kubeconfig", kube.kubeconfig, "uninstall", release, "--namespace", system_ns],
            check=False,
            capture_output=True,
            timeout=120,
        )
        kube.delete(f"/api/v1/namespaces/{watched_ns}")
        kube.delete(f"/api/v1/namespaces/{system_ns}")


def _kopf_peering_crd(plural: str, kind: str, scope: str) -> dict:
    """The shape of kopf's own peering CRDs, as an earlier install (kopf's docs, or this chart before leader
    election) left them in a cluster."""
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.kopf.dev"},
            "spec": {"group": "kopf.dev", "scope": scope,
                     "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
                     "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                         "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}


def test_the_chart_installs_where_kopf_peering_crds_already_exist(kube: Kube) -> None:
    """The chart ships no kopf CRDs: an install next to existing ones (not owned by any release) must not fail
    with "exists and cannot be imported into the current release", and must leave them alone."""
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    made = []
    for plural, kind, scope in (("clusterkopfpeerings", "ClusterKopfPeering", "Cluster"),
                                ("kopfpeerings", "KopfPeering", "Namespaced")):
        if kube.get(f"{crds}/{plural}.kopf.dev") is None:
            kube.create(crds, _kopf_peering_crd(plural, kind, scope))
            made.append(f"{plural}.kopf.dev")
    suffix = uuid.uuid4().hex[:6]
    system_ns, release = f"lftchart-kopf-{suffix}", f"lftk{suffix}"
    try:
        # The chart's defaults but no operator pod (on a full cluster it would run, and reconcile other tests'
        # resources beside their own operators).
        out = helm(kube, "install", release, str(CHART), "--namespace", system_ns, "--create-namespace",
                   "--set", "crds.install=false", "--set", "replicaCount=0", "--wait=false")
        assert "STATUS: deployed" in out
        manifest = helm(kube, "get", "manifest", release, "--namespace", system_ns)
        assert "kopf.dev" not in manifest
        for name in ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
            assert kube.get(f"{crds}/{name}") is not None, f"{name} was removed by the install"
    finally:
        subprocess.run([HELM, "--kubeconfig", kube.kubeconfig, "uninstall", release, "--namespace", system_ns],
                       check=False, capture_output=True, timeout=120)
        kube.delete(f"/api/v1/namespaces/{system_ns}")
        for name in made:
            kube.delete(f"{crds}/{name}")


CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/lorafinetunes.finetune.dev"


def test_the_release_upgrades_its_crd_and_uninstall_keeps_it(kube: Kube, tmp_path) -> None:
    """The CRD is part of the release (templates/crd.yaml): an install takes over the CRD already there (as after
    an install of a chart version that shipped it in crds/), an upgrade brings the CRD to the chart's version (here
    from an older one without the Queue column), and uninstall leaves the CRD and the resources in place (keep)."""
    suffix = uuid.uuid4().hex[:6]
    system_ns, user_ns, release = f"lftcrd-sys-{suffix}", f"lftcrd-{suffix}", f"lftcrd{suffix}"
    older = tmp_path / "older"
    shutil.copytree(CHART, older)
    crd_file = next((older / "files" / "crds").glob("*.yaml"))
    old_crd = yaml.safe_load(crd_file.read_text())
    for version in old_crd["spec"]["versions"]:
        version["additionalPrinterColumns"] = [c for c in version["additionalPrinterColumns"] if c["name"] != "Queue"]
    crd_file.write_text(yaml.safe_dump(old_crd))

    def columns() -> list[str]:
        return [c["name"] for c in kube.get(CRD)["spec"]["versions"][0]["additionalPrinterColumns"]]

    common = ("--namespace", system_ns, "--set", "replicaCount=0", "--wait=false")
    try:
        # As from 0.1.0, whose CRD another field manager wrote (here the session fixture, with other printer
        # columns): --take-ownership adopts it, --force-conflicts lets the chart's fields win.
        helm(kube, "install", release, str(older), "--create-namespace", "--take-ownership", "--force-conflicts",
             *common)
        meta = kube.get(CRD)["metadata"]
        assert meta["annotations"]["meta.helm.sh/release-name"] == release, meta
        assert meta["annotations"]["helm.sh/resource-policy"] == "keep"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert "Queue" not in columns()

        helm(kube, "upgrade", release, str(CHART), *common)
        assert "Queue" in columns()  # the upgrade brought the CRD to the chart's version

        kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": user_ns}})
        kube.create_lft(user_ns, "survivor", spec())
        helm(kube, "uninstall", release, "--namespace", system_ns)
        assert kube.get(CRD) is not None  # helm.sh/resource-policy: keep
        assert kube.lft(user_ns, "survivor") is not None
    finally:
        subprocess.run([HELM, "--kubeconfig", kube.kubeconfig, "uninstall", release, "--namespace", system_ns],
                       check=False, capture_output=True, timeout=120)
        kube.delete(f"/api/v1/namespaces/{user_ns}")
        kube.delete(f"/api/v1/namespaces/{system_ns}")
