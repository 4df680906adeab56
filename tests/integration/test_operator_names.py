"""A run never adopts an object it did not create: names the operator wants for a run's ServiceAccount,
ConfigMap or Job that another object holds, on a real API server (with the garbage collector).

Before: `Reconciler._create` (now `RunChildren.create_or_adopt`) took whatever answered to the name on a 409, so a ServiceAccount someone
made ahead of the run (bound to any Role) ran the trainer, and a recreated LoRAFineTune's ConfigMap could be
the deleted namesake's, trained on or garbage-collected under the new run.
"""

from __future__ import annotations

import time

import pytest

from lft_api import contract
from lft_api.conditions import ACCEPTED, RUNNING, Reason
from tests.support.kube import wait_until
from tests.support.operator import cond, is_true, spec

pytestmark = pytest.mark.integration


def owner_uid(obj: dict | None) -> str | None:
    refs = [r for r in (obj or {}).get("metadata", {}).get("ownerReferences") or [] if r.get("controller")]
    return refs[0]["uid"] if refs else None


def test_a_serviceaccount_made_ahead_of_the_run_is_not_used(kube, namespace, operator):
    sa_path = f"/api/v1/namespaces/{namespace}/serviceaccounts/early-trainer"
    kube.create(f"/api/v1/namespaces/{namespace}/serviceaccounts",
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "early-trainer"}})
    kube.create_lft(namespace, "early", spec())
    status = kube.wait_lft(namespace, "early", lambda s: cond(s, RUNNING).get("reason") == Reason.NAME_TAKEN,
                           timeout=30)["status"]
    assert status["phase"] == "Pending" and "ServiceAccount early-trainer exists" in status["message"], status
    assert "no owner" in status["message"]
    wait_until(lambda: [e for e in kube.events(namespace, "early") if e["reason"] == Reason.NAME_TAKEN], 10)
    assert kube.jobs(namespace, "early") == []
    assert owner_uid(kube.get(sa_path)) is None  # not changed either

    kube.delete(sa_path)
    lft = kube.wait_lft(namespace, "early", lambda s: is_true(s, ACCEPTED), timeout=60)
    assert owner_uid(kube.get(sa_path)) == lft["metadata"]["uid"]


def test_a_configmap_made_ahead_of_the_run_is_reported_and_left_alone(kube, namespace, operator):
    cm_path = f"/api/v1/namespaces/{namespace}/configmaps/squat-trainer-config"
    kube.create(f"/api/v1/namespaces/{namespace}/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "squat-trainer-config"},
        "data": {"config.json": "{}"}})
    kube.create_lft(namespace, "squat", spec())
    kube.wait_lft(namespace, "squat", lambda s: is_true(s, ACCEPTED), timeout=30)
    warned = wait_until(lambda: [e for e in kube.events(namespace, "squat") if e["reason"] == Reason.NAME_TAKEN], 20)
    assert "ConfigMap squat-trainer-config exists and was not created for this LoRAFineTune" in warned[0]["message"]
    assert kube.get(cm_path)["data"] == {"config.json": "{}"}  # the operator did not change it


def test_a_recreated_namesake_gets_its_own_config(kube, namespace, operator):
    kube.create_lft(namespace, "again", spec(training={"maxSteps": 30}))
    first = kube.wait_lft(namespace, "again", lambda s: is_true(s, ACCEPTED), timeout=30)
    cm_path = f"/api/v1/namespaces/{namespace}/configmaps/again-trainer-config"
    wait_until(lambda: owner_uid(kube.get(cm_path)) == first["metadata"]["uid"], 20, what="the first ConfigMap")
    # The first's ConfigMap outlives it for a while (a finalizer stands for a slow garbage collector); the
    # resource is created again at once, with another spec.
    kube.merge_patch(cm_path, {"metadata": {"finalizers": ["lft.test/hold"]}})
    kube.delete(kube.lft_path(namespace, "again"))
    second = kube.create_lft(namespace, "again", spec(training={"maxSteps": 31}))
    uid = second["metadata"]["uid"]
    wait_until(lambda: owner_uid(kube.job(namespace, "again")) == uid, 60, what="the second resource's Job")
    time.sleep(2)
    assert owner_uid(kube.get(cm_path)) == first["metadata"]["uid"]  # still the old one, being deleted
    kube.merge_patch(cm_path, {"metadata": {"finalizers": None}})

    def own_config() -> bool:
        cm = kube.get(cm_path)
        return owner_uid(cm) == uid and cm["data"].get(contract.CONFIG_OWNER_FILE) == uid

    # Before, the old ConfigMap was taken as the second's and, once gone, never created again.
    wait_until(own_config, 60, what="a ConfigMap of the second resource")
    assert '"maxSteps": 31' in kube.get(cm_path)["data"]["config.json"]
    kube.wait_lft(namespace, "again", lambda s: is_true(s, ACCEPTED), timeout=30)
