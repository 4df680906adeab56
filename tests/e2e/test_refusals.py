"""Resources that cannot run say so, quickly and precisely, on the real cluster:

(a) two LoRAFineTunes with the same output.uri: the second is refused (Accepted=False, OutputInUse,
    naming the first) and the first succeeds unaffected;
(b) a podTemplate volume named like one of the operator's own ("config"): Failed with JobInvalid
    within 30 s, with a Warning event;
(c) a namespace whose ResourceQuota allows no pods: Pending with PodCreationFailed and the quota
    error in status.message within 30 s;
(d) a hostPath volume, which the chart's default admin policy does not allow: Accepted=False,
    PolicyViolation naming the volume and the rule within 30 s, a Warning event, nothing created.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.support import faults
from tests.support.faults import assert_succeeded, report, wait_final
from tests.support.scenarios import condition, finetune, output_prefix

pytestmark = pytest.mark.e2e
QUICK = 30.0  # seconds within which a refusal must show


def test_same_output_uri_second_refused_first_succeeds(kube, s3, s3_endpoint, namespace):
    first, second = "first", "second"
    started = time.monotonic()
    kube.apply(finetune(namespace, first, s3_endpoint, max_steps=150, every_steps=50), namespace)
    kube.wait_for(f"{first} Running", lambda: kube.lft(namespace, first).get("status", {}).get("phase") == "Running",
                  240)
    body = finetune(namespace, second, s3_endpoint, max_steps=150, every_steps=50)
    body["spec"]["output"]["uri"] = f"s3://{faults.BUCKET}/{output_prefix(namespace, first)}"
    applied = time.monotonic()
    kube.apply(body, namespace)

    def refused():
        obj = kube.lft(namespace, second)
        accepted = condition(obj, "Accepted")
        return obj if accepted.get("status") == "False" and accepted.get("reason") == "OutputInUse" else None
    obj = kube.wait_for(f"{second} refused with OutputInUse", refused, QUICK, interval=0.5)
    refused_after = time.monotonic() - applied
    accepted = condition(obj, "Accepted")
    assert first in accepted.get("message", ""), accepted
    assert obj["status"].get("phase") == "Pending", obj["status"]
    jobs = kube.json("get", "jobs", "-n", namespace, "-l", f"finetune.dev/name={second}")["items"]
    assert not jobs, [j["metadata"]["name"] for j in jobs]
    events = kube.events(namespace, second)
    assert any(e["type"] == "Warning" and e["reason"] == "OutputInUse" for e in events), events

    done = wait_final(kube, namespace, first, timeout=420)
    elapsed = time.monotonic() - started
    assert_succeeded(done)
    assert done["status"]["attempts"] == 1, done["status"].get("attemptHistory")
    assert done["status"]["progress"]["step"] == 150
    files = faults.verify_adapter(s3, done, output_prefix(namespace, first))
    # The second never ran: no trainer pod of it wrote into the first's output.
    assert not kube.pods(namespace, second)
    report("same output.uri twice", done["status"]["phase"], elapsed, second_refused_after=refused_after,
           adapter_files_verified=files)


def test_reserved_volume_name_fails_job_invalid(kube, s3, s3_endpoint, namespace):
    name = "jobinvalid"
    body = finetune(namespace, name, s3_endpoint)
    body["spec"]["podTemplate"] = {"volumes": [{"name": "config", "emptyDir": {}}]}
    started = time.monotonic()
    kube.apply(body, namespace)
    obj = wait_final(kube, namespace, name, timeout=QUICK + 30)
    elapsed = time.monotonic() - started
    status = obj["status"]
    assert status["phase"] == "Failed", status
    failed = condition(obj, "Failed")
    assert failed.get("status") == "True" and failed.get("reason") == "JobInvalid", failed
    assert "config" in status.get("message", ""), status.get("message")
    events = kube.events(namespace, name)
    assert any(e["type"] == "Warning" for e in events), [(e["type"], e["reason"]) for e in events]
    assert not kube.pods(namespace, name)
    report("podTemplate volume named config", status["phase"], elapsed, reason=failed["reason"])
    assert elapsed <= QUICK, f"Failed after {elapsed:.1f} s"


def test_pod_quota_exceeded_pending_pod_creation_failed(kube, s3, s3_endpoint, namespace):
    name = "quota"
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"},
             "spec": {"hard": {"pods": "0"}}}
    kube.apply(quota, namespace)
    # The quota controller must have counted usage before it admits or refuses anything.
    kube.wait_for("quota status", lambda: kube.json("get", "resourcequota", "no-pods", "-n", namespace)
                  .get("status", {}).get("hard"), 30)
    started = time.monotonic()
    kube.apply(finetune(namespace, name, s3_endpoint), namespace)

    def blocked():
        obj = kube.lft(namespace, name)
        status = obj.get("status", {})
        reasons = {c.get("reason") for c in status.get("conditions", [])}
        if status.get("phase") == "Pending" and "PodCreationFailed" in reasons \
                and "exceeded quota" in status.get("message", ""):
            return obj
        return None
    obj = kube.wait_for("Pending with PodCreationFailed", blocked, QUICK + 30, interval=0.5)
    elapsed = time.monotonic() - started
    status = obj["status"]
    assert not kube.pods(namespace, name)
    report("ResourceQuota pods: 0", status["phase"], elapsed, reason="PodCreationFailed",
           message=json.dumps(status.get("message", ""))[:160])
    assert elapsed <= QUICK, f"PodCreationFailed shown after {elapsed:.1f} s"


def test_host_path_volume_refused_by_the_default_policy(kube, s3, s3_endpoint, namespace):
    name = "hostpath"
    body = finetune(namespace, name, s3_endpoint)
    body["spec"]["podTemplate"] = {"volumes": [{"name": "host", "hostPath": {"path": "/"}}]}
    started = time.monotonic()
    kube.apply(body, namespace)

    def refused():
        obj = kube.lft(namespace, name)
        return obj if condition(obj, "Accepted").get("reason") == "PolicyViolation" else None
    obj = kube.wait_for("Accepted=False with PolicyViolation", refused, QUICK + 30, interval=0.5)
    elapsed = time.monotonic() - started
    accepted = condition(obj, "Accepted")
    assert accepted["status"] == "False" and obj["status"]["phase"] == "Pending", obj["status"]
    assert accepted["message"].startswith('spec.podTemplate.volumes[0] ("host") has kind hostPath'), accepted
    assert "policy.allowedVolumeKinds" in accepted["message"], accepted
    kube.wait_for("PolicyViolation event", lambda: any(
        e["type"] == "Warning" and e["reason"] == "PolicyViolation" for e in kube.events(namespace, name)), 15)
    for kind in ("jobs", "configmaps", "serviceaccounts", "roles", "rolebindings"):
        made = kube.json("get", kind, "-n", namespace, "-l", f"finetune.dev/name={name}")["items"]
        assert not made, (kind, [m["metadata"]["name"] for m in made])
    assert not kube.pods(namespace, name)
    report("podTemplate hostPath volume", obj["status"]["phase"], elapsed, reason="PolicyViolation")
    assert elapsed <= QUICK, f"PolicyViolation shown after {elapsed:.1f} s"
