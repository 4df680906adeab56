"""hack/kueue_manifests.py: Kueue's kustomize config rewritten for a host-process Kueue (kueue-up.sh)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("kueue_manifests", ROOT / "hack" / "kueue_manifests.py")
assert _spec is not None and _spec.loader is not None
km = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(km)

URL = "https://127.0.0.1:9443"
CA = "Q0E="


def _webhook(name: str, group: str, resource: str, path: str) -> dict:
    return {
        "admissionReviewVersions": ["v1"],
        "clientConfig": {"service": {"name": "webhook-service", "namespace": "system", "path": path}},
        "failurePolicy": "Fail",
        "name": name,
        "rules": [{"apiGroups": [group], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                   "resources": [resource]}],
        "sideEffects": "None",
    }


UPSTREAM = [
    {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "mutating-webhook-configuration"},
        "webhooks": [
            _webhook("mjob.kb.io", "batch", "jobs", "/mutate-batch-v1-job"),
            _webhook("mpod.kb.io", "", "pods", "/mutate--v1-pod"),
            _webhook("mworkload.kb.io", "kueue.x-k8s.io", "workloads", "/mutate-kueue-x-k8s-io-v1beta2-workload"),
            _webhook("mrayjob.kb.io", "ray.io", "rayjobs", "/mutate-ray-io-v1-rayjob"),
        ],
    },
    {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "validating-webhook-configuration"},
        "webhooks": [
            _webhook("vjob.kb.io", "batch", "jobs", "/validate-batch-v1-job"),
            _webhook("vdeployment.kb.io", "apps", "deployments", "/validate-apps-v1-deployment"),
            _webhook("vclusterqueue.kb.io", "kueue.x-k8s.io", "clusterqueues",
                     "/validate-kueue-x-k8s-io-v1beta2-clusterqueue"),
        ],
    },
]


def test_webhooks_keep_jobs_and_kueue_objects_only_served_by_url():
    out = km.rewrite_webhooks(UPSTREAM, URL, CA)
    assert [d["metadata"]["name"] for d in out] == [km.MUTATING_NAME, km.VALIDATING_NAME]
    assert [w["name"] for w in out[0]["webhooks"]] == ["mjob.kb.io", "mworkload.kb.io"]
    assert [w["name"] for w in out[1]["webhooks"]] == ["vclusterqueue.kb.io", "vjob.kb.io"]
    for doc in out:
        for w in doc["webhooks"]:
            assert "service" not in w["clientConfig"]
            assert w["clientConfig"]["caBundle"] == CA
            assert w["clientConfig"]["url"].startswith(URL + "/")
            assert w["failurePolicy"] == "Fail"
    job = out[0]["webhooks"][0]
    assert job["clientConfig"]["url"] == URL + "/mutate-batch-v1-job"
    # The input is not changed (the upstream file is read-only in the module cache anyway).
    assert "service" in UPSTREAM[0]["webhooks"][0]["clientConfig"]


def test_job_webhooks_only_for_opted_in_namespaces():
    out = km.rewrite_webhooks(UPSTREAM, URL, CA, namespace_label="kueue.lft.dev/enabled")
    job = next(w for w in out[0]["webhooks"] if w["name"] == "mjob.kb.io")
    exprs = job["namespaceSelector"]["matchExpressions"]
    assert {"key": "kueue.lft.dev/enabled", "operator": "In", "values": ["true"]} in exprs
    assert {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "kueue-system"]} in exprs
    workload = next(w for w in out[0]["webhooks"] if w["name"] == "mworkload.kb.io")
    assert "namespaceSelector" not in workload  # Kueue's own objects: always through Kueue
    everywhere = km.rewrite_webhooks(UPSTREAM, URL, CA, namespace_label=None)
    exprs = everywhere[0]["webhooks"][0]["namespaceSelector"]["matchExpressions"]
    assert [e["key"] for e in exprs] == ["kubernetes.io/metadata.name"]


def _crd(name: str) -> dict:
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": name},
            "spec": {"group": "kueue.x-k8s.io", "versions": [{"name": "v1beta1", "served": True, "storage": False},
                                                            {"name": "v1beta2", "served": True, "storage": True}]}}


def test_crds_convert_by_url_as_upstream_patches_them():
    wl = km.rewrite_crd(_crd("workloads.kueue.x-k8s.io"), URL, CA)
    assert wl["spec"]["conversion"] == {
        "strategy": "Webhook",
        "webhook": {"clientConfig": {"url": URL + "/convert", "caBundle": CA}, "conversionReviewVersions": ["v1"]},
    }
    rf = km.rewrite_crd(_crd("resourceflavors.kueue.x-k8s.io"), URL, CA)
    assert "conversion" not in rf["spec"]


def test_configuration_for_a_host_process():
    cfg = km.configuration(9443, "/certs", 18081, 18443)
    assert cfg["apiVersion"] == "config.kueue.x-k8s.io/v1beta2" and cfg["kind"] == "Configuration"
    assert cfg["webhook"] == {"host": "127.0.0.1", "port": 9443, "certDir": "/certs"}
    assert cfg["internalCertManagement"] == {"enable": False}
    assert cfg["leaderElection"] == {"leaderElect": False}
    assert cfg["manageJobsWithoutQueueName"] is False
    assert cfg["integrations"] == {"frameworks": ["batch/job"]}
    assert cfg["health"]["healthProbeBindAddress"].startswith("127.0.0.1:")
    assert cfg["metrics"]["bindAddress"].startswith("127.0.0.1:")


def test_command_line(tmp_path, capsys):
    f = tmp_path / "manifests.yaml"
    f.write_text(yaml.safe_dump_all(UPSTREAM))
    assert km.main(["webhooks", str(f), "--url", URL, "--ca-bundle", CA]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]
    (tmp_path / "crds").mkdir()
    (tmp_path / "crds" / "wl.yaml").write_text(yaml.safe_dump(_crd("workloads.kueue.x-k8s.io")))
    assert km.main(["crds", str(tmp_path / "crds"), "--url", URL, "--ca-bundle", CA]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["spec"]["conversion"]["strategy"] == "Webhook"


_MODULE = Path(os.environ.get("LFT_CACHE", "/var/cache/lft")) / "gomod/sigs.k8s.io/kueue@v0.17.0/config/components"
_REAL = Path(os.environ.get("LFT_KUEUE_CONFIG", str(_MODULE)))


@pytest.mark.skipif(not (_REAL / "webhook" / "manifests.yaml").is_file(), reason=f"no Kueue module config at {_REAL}")
def test_real_v0_17_manifests():
    docs = km.rewrite_webhooks([d for d in yaml.safe_load_all((_REAL / "webhook" / "manifests.yaml").read_text()) if d],
                               URL, CA)
    names = {w["name"] for d in docs for w in d["webhooks"]}
    assert {"mjob.kb.io", "vjob.kb.io", "mworkload.kb.io", "vworkload.kb.io"} <= names
    assert not any(n.startswith(("mpod", "vpod", "mdeployment", "vdeployment")) for n in names)
    converted = {d["metadata"]["name"] for f in sorted((_REAL / "crd" / "bases").glob("*.yaml"))
                 for d in yaml.safe_load_all(f.read_text()) if d and "conversion" in km.rewrite_crd(d, URL, CA)["spec"]}
    assert converted == km.CONVERTED_CRDS
