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
from tests.support.kube import FAKE_NODE, Kube, Operator, wait_until
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
         "podTemplate": {"env": [{"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db-password", "key": "p"}}}]}},
        'spec.podTemplate.env[0].valueFrom.secretKeyRef.name "db-password" is not an allowed Secret '
        '(allowed: the storage Secret "s3" and policy.allowedSecrets: hf-token)',
    ),
    "storage": (
        {"storageSecretRef": {"name": "other-team-s3"}},
        'spec.storageSecretRef.name "other-team-s3" is not allowed (policy.allowedStorageSecrets: s3)',
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
        assert (accepted["reason"], accepted["message"]) == (Reason.POLICY_VIOLATION, message), name
        assert status["phase"] == "Pending" and status["message"] == f"Not accepted: {message}"

        def warned(name: str = name, message: str = message) -> bool:
            return any(
                (e["type"], e["reason"], e["message"]) == ("Warning", Reason.POLICY_VIOLATION, message)
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
