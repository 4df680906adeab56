"""The admin policy on a real API server: a resource that breaks a rule is refused before anything exists.

An operator of its own (LFT_POLICY with every optional allow list set) watches a namespace outside the
session operator's lft-it-* pattern. One resource per class of rule: Accepted=False, PolicyViolation,
the exact message in the condition and in a Warning Event, and no Job, ConfigMap, ServiceAccount,
Role or RoleBinding. A compliant resource that uses every allowance proceeds to a pod that is
Pod Security restricted.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest

from lft_api.conditions import ACCEPTED, Reason
from tests.support.kube import FAKE_NODE, ApiError, Kube, Operator, wait_until
from tests.support.operator import cond, is_true, spec
from tests.support.pod_security import restricted_violations

pytestmark = pytest.mark.integration

POLICY = {
    "allowedSecrets": ["hf-token"],
    "allowedServiceAccounts": ["workload-id"],
    "allowedStorageSecrets": ["s3"],
    "allowedTolerations": [{"key": "nvidia.com/gpu"}],
    "allowedPriorityClasses": ["training"],
    "allowedNodeSelectors": {"lft.test/node": ["*"]},
}
KINDS = "persistentVolumeClaim, configMap, secret, emptyDir, projected"
RESTRICTED = "seccomp and AppArmor profiles are set by the operator (trainer pods are always Pod Security restricted)"

# name: (spec fields, the Accepted=False message)
REFUSED = {
    "image": (
        {"image": "evil/miner:1"},
        'spec.image "evil/miner:1" is not an allowed trainer image (policy.allowedImages: lft/trainer:*, lft/trainer@*)',
    ),
    "remote-code": (
        {"model": {"name": "/opt/lft/models/tiny-phi3", "trustRemoteCode": True}},
        "spec.model.trustRemoteCode true is not allowed: it runs code from the model's repository in the trainer "
        "pod (policy.allowTrustRemoteCode: false)",
    ),
    "volume": (
        {"podTemplate": {"volumes": [{"name": "host", "hostPath": {"path": "/"}}]}},
        f'spec.podTemplate.volumes[0] ("host") has kind hostPath, not an allowed volume kind (policy.allowedVolumeKinds: {KINDS})',
    ),
    "sa": (
        {"podTemplate": {"serviceAccountName": "default"}},
        'spec.podTemplate.serviceAccountName "default" is not allowed: trainers run as their generated ServiceAccount '
        "unless the policy names another (policy.allowedServiceAccounts: workload-id)",
    ),
    "secret": (
        {"storageSecretRef": {"name": "s3"},
         "podTemplate": {"env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "db-password", "key": "p"}}}]}},
        'spec.podTemplate.env[0].valueFrom.secretKeyRef.name "db-password" is not an allowed Secret '
        '(allowed: the storage Secret "s3" and policy.allowedSecrets: hf-token)',
    ),
    "storage": (
        {"storageSecretRef": {"name": "other-team-s3"}},
        'spec.storageSecretRef.name "other-team-s3" is not allowed: every key of it would become the trainer\'s '
        "environment (allowed: the operator's storage Secret and policy.allowedStorageSecrets: s3)",
    ),
    "toleration": (
        {"tolerations": [{"operator": "Exists"}]},
        'spec.tolerations[0] {"operator":"Exists"} is not allowed (policy.allowedTolerations: {"key":"nvidia.com/gpu"})',
    ),
    "priority": (
        {"priorityClassName": "system-node-critical"},
        'spec.priorityClassName "system-node-critical" is not allowed (policy.allowedPriorityClasses: training)',
    ),
    "node": (
        {"nodeSelector": {"lft.test/node": FAKE_NODE, "node-role.kubernetes.io/master": "true"}},
        'spec.nodeSelector["node-role.kubernetes.io/master"] "true" is not allowed '
        '(policy.allowedNodeSelectors: {"lft.test/node":["*"]})',
    ),
    # The tenant-attack reproductions: its own code through PYTHONPATH, a pod file as the chat template.
    "pythonpath": (
        {"podTemplate": {"env": [{"name": "PYTHONPATH", "value": "/mnt/x"}],
                         "volumes": [{"name": "x", "configMap": {"name": "evil"}}],
                         "volumeMounts": [{"name": "x", "mountPath": "/mnt/x"}]}},
        'spec.podTemplate.env[0].name "PYTHONPATH" is not an allowed variable: the trainer takes the documented ones',
    ),
    "mount": (
        {"podTemplate": {"volumes": [{"name": "x", "configMap": {"name": "evil"}}],
                         "volumeMounts": [{"name": "x", "mountPath": "/opt/venv"}]}},
        'spec.podTemplate.volumeMounts[0].mountPath "/opt/venv" is not allowed: mounts go under /data, /mnt',
    ),
    "template": (
        {"model": {"name": "/opt/lft/models/tiny-phi3", "chatTemplate": "/proc/self/environ"},
         "dataset": {"uri": "/opt/lft/data/chat_tiny.jsonl", "format": "text"}},
        'spec.model.chatTemplate "/proc/self/environ" is not allowed: give inline Jinja, a template name',
    ),
    "seccomp": (
        {"podTemplate": {"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}}},
        f'spec.podTemplate.annotations["seccomp.security.alpha.kubernetes.io/pod"] "unconfined" is not allowed: {RESTRICTED}',
    ),
}

COMPLIANT = {
    "image": "lft/trainer:gpu",
    "storageSecretRef": {"name": "s3"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "podTemplate": {
        "serviceAccountName": "workload-id",
        "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}, {"name": "scratch"}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "annotations": {"prometheus.io/scrape": "false"},
    },
}


@pytest.fixture(scope="module")
def policed(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A namespace watched by an operator with POLICY; its name."""
    ns = f"lftpolicy-{uuid.uuid4().hex[:8]}"
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    for name in ("s3", "hf-token"):
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"token": "t"}}
        kube.create(f"/api/v1/namespaces/{ns}/secrets", secret)
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "workload-id"}}
    kube.create(f"/api/v1/namespaces/{ns}/serviceaccounts", sa)
    op = Operator(
        kube.kubeconfig, tmp_path_factory.mktemp("policy") / "operator.log", LFT_NAMESPACES=ns, LFT_POLICY=json.dumps(POLICY)
    )
    op.start()
    try:
        yield ns
    finally:
        op.stop()
        kube.delete(f"/api/v1/namespaces/{ns}")
        kube.remove_pods(ns)


def children(kube: Kube, ns: str, name: str) -> dict[str, object]:
    """What the operator creates for a resource, by kind (None: absent)."""
    child = f"{name}-trainer"
    return {
        "Job": kube.get(f"/apis/batch/v1/namespaces/{ns}/jobs/{child}"),
        "ConfigMap": kube.get(f"/api/v1/namespaces/{ns}/configmaps/{child}-config"),
        "ServiceAccount": kube.get(f"/api/v1/namespaces/{ns}/serviceaccounts/{child}"),
        "Role": kube.get(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles/{child}"),
        "RoleBinding": kube.get(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/{child}"),
    }


def test_each_class_of_rule_is_refused_before_anything_is_created(kube, policed):
    ns = policed
    for name, (fields, _) in REFUSED.items():
        kube.create_lft(ns, name, spec(**fields))
    kube.create_lft(ns, "compliant", spec(**COMPLIANT))

    for name, (_, message) in REFUSED.items():
        status = kube.wait_lft(ns, name, lambda s: cond(s, ACCEPTED).get("status") == "False", timeout=30)["status"]
        accepted = cond(status, ACCEPTED)
        assert accepted["reason"] == Reason.POLICY_VIOLATION and accepted["message"].startswith(message), name
        assert status["phase"] == "Pending" and status["message"].startswith(f"Not accepted: {message}")

        def warned(name: str = name, message: str = message) -> bool:
            return any(
                (e["type"], e["reason"]) == ("Warning", Reason.POLICY_VIOLATION) and e["message"].startswith(message)
                for e in kube.events(ns, name)
            )

        wait_until(warned, 15, what=f"the PolicyViolation Event of {name}")

    # The compliant one proceeds, to a restricted pod the real Job controller creates.
    kube.wait_lft(ns, "compliant", lambda s: is_true(s, ACCEPTED))
    made = children(kube, ns, "compliant")
    assert made["ServiceAccount"] is None and all(made[k] for k in ("Job", "ConfigMap", "Role", "RoleBinding"))
    pod = kube.wait_for_pod(ns, "compliant")
    assert pod["spec"]["serviceAccountName"] == "workload-id"
    assert restricted_violations({"metadata": pod["metadata"], "spec": pod["spec"]}) == []

    # Later reconciles (resync every 10 s here) create nothing for the refused ones, and post no new Event.
    time.sleep(12)
    for name in REFUSED:
        assert children(kube, ns, name) == dict.fromkeys(("Job", "ConfigMap", "ServiceAccount", "Role", "RoleBinding")), name
        assert [e["reason"] for e in kube.events(ns, name)] == [Reason.POLICY_VIOLATION], name


def test_a_refused_resource_proceeds_once_its_spec_complies(kube, policed):
    ns = policed
    kube.create_lft(ns, "fixed", spec(image="evil/miner:1"))
    kube.wait_lft(ns, "fixed", lambda s: cond(s, ACCEPTED).get("reason") == Reason.POLICY_VIOLATION)
    assert kube.jobs(ns, "fixed") == []
    kube.merge_patch(kube.lft_path(ns, "fixed"), {"spec": {"image": "lft/trainer:v2"}})
    kube.wait_lft(ns, "fixed", lambda s: is_true(s, ACCEPTED))
    (job,) = kube.jobs(ns, "fixed")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "lft/trainer:v2"


def test_a_tenant_sees_its_case_variant_keys_refused_and_cannot_read_secrets(kube, policed):
    """As a tenant (impersonated: a user with LoRAFineTune rights in the namespace only), the issue's case
    reproduction: secretKeyRef {Name: allowed, name: victim} is refused by the API server with the key's path
    (strict field validation), and where the client asks for no validation the unknown spelling is pruned: the
    policy judges what is stored (victim: refused), nothing is created; and the tenant's Secret reads are
    forbidden (the premise of the model)."""
    ns, user = policed, "tenant-a"
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "tenant"},
            "rules": [{"apiGroups": ["finetune.dev"], "resources": ["lorafinetunes"], "verbs": ["*"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "tenant"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}
    kube.create(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles", role)
    kube.create(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", binding)
    as_tenant = {"headers": {"Impersonate-User": user}}

    def tenant_may_list() -> bool:  # RBAC is eventually consistent: the binding reaches the authorizer's cache
        try:
            kube.request("GET", kube.lft_path(ns), **as_tenant)
            return True
        except ApiError as e:
            if e.status != 403:
                raise
            return False
    wait_until(tenant_may_list, 30, what="the tenant's RoleBinding to take effect")
    with pytest.raises(ApiError) as denied:
        kube.request("GET", f"/api/v1/namespaces/{ns}/secrets/s3", **as_tenant)
    assert denied.value.status == 403

    env = [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"Name": "hf-token", "name": "victim", "key": "k"}}}]
    body = {"apiVersion": "finetune.dev/v1alpha1", "kind": "LoRAFineTune", "metadata": {"name": "case"},
            "spec": spec(podTemplate={"env": env})}
    with pytest.raises(ApiError) as strict:
        kube.request("POST", kube.lft_path(ns) + "?fieldValidation=Strict", body, **as_tenant)
    assert strict.value.status == 400
    assert 'unknown field "spec.podTemplate.env[0].valueFrom.secretKeyRef.Name"' in strict.value.message
    created = kube.request("POST", kube.lft_path(ns), body, **as_tenant)
    assert created["spec"]["podTemplate"]["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "victim", "key": "k"}
    status = kube.wait_lft(ns, "case", lambda s: cond(s, ACCEPTED).get("status") == "False", timeout=30)["status"]
    accepted = cond(status, ACCEPTED)
    assert accepted["reason"] == Reason.POLICY_VIOLATION, accepted
    assert "victim" in accepted["message"], accepted
    assert children(kube, ns, "case") == dict.fromkeys(("Job", "ConfigMap", "ServiceAccount", "Role", "RoleBinding"))
