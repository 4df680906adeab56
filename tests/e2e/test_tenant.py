"""A tenant attacks the admin policy on the real cluster, and every attack is refused or has no effect.

The tenant is a user the tests impersonate (`kubectl --as tenant-<ns>`) who holds only a Role in its
namespace: LoRAFineTunes (all verbs) and ConfigMaps (create, get), no Secrets, no Jobs, no pods/exec.
The chart's default policy is in force (hack/deploy.sh sets only the storage Secret and the e2e
tracking scenario's credentials Secret). Each case is one the security issue reported or a variation
of it; each is refused before anything is created (Accepted=False, with the field named), except the
last, which runs and fails with SecretInOutput before any upload.
"""

from __future__ import annotations

import base64
import json
import time

import pytest

from tests.support import faults
from tests.support.faults import report
from tests.support.scenarios import S3_SECRET_KEY, condition, finetune, keys_under, output_prefix

pytestmark = pytest.mark.e2e
QUICK = 30.0

SITECUSTOMIZE = """import base64, json, os
open('/dev/termination-log', 'w').write(json.dumps({'outcome': 'failed', 'reason': 'Pwned',
    'message': base64.b64encode(json.dumps(dict(os.environ)).encode()).decode()}))
"""


def tenant_role(kube, namespace: str) -> str:
    """A user with LoRAFineTune rights (and ConfigMap create/get) in `namespace` only; its name."""
    user = f"tenant-{namespace}"
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "lft-tenant", "namespace": namespace},
            "rules": [{"apiGroups": ["finetune.dev"], "resources": ["lorafinetunes"], "verbs": ["*"]},
                      {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "get"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "lft-tenant", "namespace": namespace},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "lft-tenant"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}
    for obj in (role, binding):
        kube.apply(obj, namespace)
    return user


def as_tenant(kube, user: str, namespace: str, manifest: dict) -> None:
    kube.run("--as", user, "apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest))


def wait_refused(kube, namespace: str, name: str, reason: str) -> dict:
    def refused():
        obj = kube.lft(namespace, name)
        return obj if condition(obj, "Accepted").get("reason") == reason else None
    return kube.wait_for(f"{name}: Accepted=False with {reason}", refused, QUICK + 30, interval=0.5)


def nothing_created(kube, namespace: str, name: str) -> None:
    for kind in ("jobs", "configmaps", "serviceaccounts", "roles", "rolebindings", "services", "networkpolicies"):
        made = kube.json("get", kind, "-n", namespace, "-l", f"finetune.dev/name={name}")["items"]
        assert not made, (name, kind, [m["metadata"]["name"] for m in made])
    assert not kube.pods(namespace, name)


# name: (how the spec is changed, reason, what the message starts with)
ATTACKS = {
    # 1. PYTHONPATH to a ConfigMap holding sitecustomize.py (the issue's reproduction), and the other
    #    interpreter/loader variables and our own LFT_*.
    "pythonpath": (lambda s: s["podTemplate"].update(
        env=[{"name": "PYTHONPATH", "value": "/mnt/x"}],
        volumes=[{"name": "x", "configMap": {"name": "evil"}}], volumeMounts=[{"name": "x", "mountPath": "/mnt/x"}]),
        "PolicyViolation", 'spec.podTemplate.env[0].name "PYTHONPATH" is not an allowed variable'),
    "ld-preload": (lambda s: s["podTemplate"].update(env=[{"name": "LD_PRELOAD", "value": "/mnt/x/evil.so"}]),
                   "PolicyViolation", 'spec.podTemplate.env[0].name "LD_PRELOAD" is not an allowed variable'),
    "lft-config": (lambda s: s["podTemplate"].update(env=[{"name": "LFT_CONFIG", "value": "/mnt/x/c.json"}]),
                   "PolicyViolation", 'spec.podTemplate.env[0].name "LFT_CONFIG" is not an allowed variable'),
    "proxy": (lambda s: s["podTemplate"].update(env=[{"name": "HTTPS_PROXY", "value": "http://evil:3128"}]),
              "PolicyViolation", 'spec.podTemplate.env[0].name "HTTPS_PROXY" is not an allowed variable'),
    # A mount over the trainer's own code does what PYTHONPATH did.
    "mount-over-code": (lambda s: s["podTemplate"].update(
        volumes=[{"name": "x", "configMap": {"name": "evil"}}],
        volumeMounts=[{"name": "x", "mountPath": "/opt/lft/src/lft_trainer"}]),
        "PolicyViolation", 'spec.podTemplate.volumeMounts[0].mountPath "/opt/lft/src/lft_trainer" is not allowed'),
    # 2. A pod file as the chat template (the issue's reproduction: text rows, so it is never rendered).
    "chat-template-environ": (lambda s: (s["model"].update(chatTemplate="/proc/self/environ"),
                                         s["dataset"].update(format="text")),
                              "PolicyViolation", 'spec.model.chatTemplate "/proc/self/environ" is not allowed'),
    "chat-template-token": (lambda s: s["model"].update(
        chatTemplate="file:///var/run/secrets/kubernetes.io/serviceaccount/token"),
        "PolicyViolation", 'spec.model.chatTemplate "file:///var/run/secrets/'),
    # 4. The defaults are closed: another Secret as storage, a system priority class, a catch-all toleration.
    "other-secret": (lambda s: s.update(storageSecretRef={"name": "victim"}),
                     "PolicyViolation", 'spec.storageSecretRef.name "victim" is not allowed'),
    "priority": (lambda s: s.update(priorityClassName="system-node-critical"),
                 "PolicyViolation", 'spec.priorityClassName "system-node-critical" is not allowed'),
    "toleration": (lambda s: s.update(tolerations=[{"operator": "Exists"}]),
                   "PolicyViolation", 'spec.tolerations[0] {"operator":"Exists"} is not allowed'),
}


# 3. Keys that differ only in case (the issue's reproduction, and its variations): the schema is structural, so
# kubectl's strict field validation has the API server refuse them at apply time, naming the key.
CASE_ATTACKS = {
    "case-secret-key-ref": (lambda s: s["podTemplate"].update(env=[{"name": "HF_TOKEN", "valueFrom": {
        "secretKeyRef": {"Name": "s3-credentials", "name": "victim", "key": "k"}}}]),
        'unknown field "spec.podTemplate.env[0].valueFrom.secretKeyRef.Name"'),
    "case-secret-volume": (lambda s: s["podTemplate"].update(
        volumes=[{"name": "v", "secret": {"SecretName": "s3-credentials", "secretName": "victim"}}]),
        'unknown field "spec.podTemplate.volumes[0].secret.SecretName"'),
    "case-node-affinity": (lambda s: s.update(affinity={"NodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "x", "operator": "Exists"}]}]}}}),
        'unknown field "spec.affinity.NodeAffinity"'),
}


def test_tenant_attacks_are_refused_before_anything_is_created(kube, s3, s3_endpoint, namespace):
    user = tenant_role(kube, namespace)
    # The tenant cannot read the namespace's Secrets (the premise of the whole model)...
    assert kube.run("--as", user, "auth", "can-i", "get", "secrets", "-n", namespace, check=False).stdout.strip() == "no"
    assert kube.run("--as", user, "auth", "can-i", "create", "lorafinetunes", "-n", namespace).stdout.strip() == "yes"
    kube.run("create", "secret", "generic", "victim", "-n", namespace, "--from-literal=k=victim-value")
    kube.run("--as", user, "create", "configmap", "evil", "-n", namespace, f"--from-literal=sitecustomize.py={SITECUSTOMIZE}")

    for name, (change, message) in CASE_ATTACKS.items():
        body = finetune(namespace, name, s3_endpoint, max_steps=20)
        body["spec"].setdefault("podTemplate", {})
        change(body["spec"])
        out = kube.run("--as", user, "apply", "-n", namespace, "-f", "-", stdin=json.dumps(body), check=False)
        assert out.returncode != 0 and message in out.stderr, (name, out.stderr)
        assert kube.run("get", "lft", name, "-n", namespace, check=False).returncode != 0, name

    started = time.monotonic()
    for name, (change, _, _) in ATTACKS.items():
        body = finetune(namespace, name, s3_endpoint, max_steps=20)
        body["spec"].setdefault("podTemplate", {})
        change(body["spec"])
        as_tenant(kube, user, namespace, body)
    for name, (_, reason, message) in ATTACKS.items():
        obj = wait_refused(kube, namespace, name, reason)
        accepted = condition(obj, "Accepted")
        assert accepted["status"] == "False" and accepted["message"].startswith(message), (name, accepted)
        assert obj["status"]["phase"] == "Pending"
    elapsed = time.monotonic() - started
    for name in ATTACKS:
        nothing_created(kube, namespace, name)
    report(f"tenant: {len(ATTACKS) + len(CASE_ATTACKS)} attacks refused", "Pending", elapsed,
           reason="PolicyViolation/strict field validation")
    assert elapsed <= QUICK + 30, f"refusals shown after {elapsed:.1f} s"


def test_a_secret_in_an_output_file_fails_the_run_before_any_upload(kube, s3, s3_endpoint, namespace):
    """The tenant does not know a Secret's value in practice; here the test plays one who does, and hides it
    base64-encoded in an inline chat template, which is saved with every checkpoint and the adapter."""
    user = tenant_role(kube, namespace)
    name = "smuggle"
    body = finetune(namespace, name, s3_endpoint, max_steps=20, every_steps=10)
    hidden = base64.b64encode(f"key={S3_SECRET_KEY};".encode()).decode()
    body["spec"]["model"]["chatTemplate"] = (
        "{# " + hidden + " #}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    as_tenant(kube, user, namespace, body)
    def failed_run() -> dict | None:
        obj = kube.lft(namespace, name)
        return obj if obj.get("status", {}).get("phase") == "Failed" else None
    obj = kube.wait_for(f"{name} Failed", failed_run, 300, interval=2)
    failed = condition(obj, "Failed")
    assert "SecretInOutput" in json.dumps(obj["status"]), obj["status"]
    assert S3_SECRET_KEY not in json.dumps(obj["status"]) and hidden not in json.dumps(obj["status"])
    assert failed["status"] == "True", failed
    # Nothing of the run reached the bucket: no checkpoint, no adapter, no summary.
    uploaded = [k for k in keys_under(s3, output_prefix(namespace, name) + "/")
                if "/checkpoints/" in k or "/adapter/" in k or k.endswith("training_summary.json")]
    assert uploaded == [], uploaded
    report("secret in an output file", "Failed", 0.0, reason="SecretInOutput")


def test_a_refused_resource_claims_no_output_in_another_namespace(kube, s3, s3_endpoint, namespace):
    """A resource the policy refused in namespace A does not squat the prefix a run of namespace B uses,
    and B's status never names A's resources."""
    user = tenant_role(kube, namespace)
    other = f"{namespace}-b"
    kube.run("delete", "namespace", other, "--ignore-not-found", "--timeout=120s")
    kube.run("create", "namespace", other)
    try:
        kube.run("create", "secret", "generic", "s3-credentials", "-n", other,
                 "--from-literal=AWS_ACCESS_KEY_ID=x", f"--from-literal=AWS_SECRET_ACCESS_KEY={S3_SECRET_KEY}")
        shared = f"s3://{faults.BUCKET}/{output_prefix(other, 'victim-run')}"
        squat = finetune(namespace, "squatter", s3_endpoint, max_steps=20)
        squat["spec"]["output"]["uri"] = shared
        squat["spec"]["priorityClassName"] = "system-node-critical"  # refused by the default policy
        as_tenant(kube, user, namespace, squat)
        wait_refused(kube, namespace, "squatter", "PolicyViolation")
        victim = finetune(other, "victim-run", s3_endpoint, max_steps=20)
        kube.apply(victim, other)
        # B's run is accepted and its Job created; nothing in its status names namespace A.
        def accepted() -> dict | None:
            obj = kube.lft(other, "victim-run")
            return obj if condition(obj, "Accepted").get("status") == "True" else None
        obj = kube.wait_for("victim-run accepted", accepted, QUICK + 30, interval=0.5)
        assert namespace not in json.dumps(obj.get("status", {})) and "squatter" not in json.dumps(obj["status"])
        kube.wait_for("victim-run's Job", lambda: kube.json("get", "jobs", "-n", other)["items"], QUICK)
    finally:
        kube.run("delete", "namespace", other, "--wait=false", check=False)
