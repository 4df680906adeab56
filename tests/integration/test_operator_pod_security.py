"""The API server's own Pod Security admission, enforcing "restricted", admits the trainer pods the operator
builds (single-pod and multi-node), and agrees with tests/support/pod_security.py, the unit-level mirror the
unit tests check builders with, on every control the mirror knows: each variant below breaks one control,
the admission must refuse it, and the mirror must name a violation. A mirror that drifted from the real
profile (a control forgotten, or one the server does not enforce) fails here.

Server-side dry runs (`?dryRun=All`): admission runs in full and nothing is stored, so this needs only the
API server (the oldest supported minor runs it too).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from lft_operator import builders, multinode
from lft_operator.settings import Settings
from tests.support.kube import ApiError, Kube
from tests.support.operator import make_spec
from tests.support.pod_security import restricted_violations

pytestmark = pytest.mark.integration

SETTINGS = Settings(trainer_image="lft/trainer:cpu")
ENFORCE = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


def _pod(job: dict[str, Any], namespace: str) -> dict[str, Any]:
    template = copy.deepcopy(job["spec"]["template"])
    template["metadata"].pop("labels", None)  # the Job controller's selector labels mean nothing to a bare Pod
    template["metadata"]["name"] = "trainer"
    template["metadata"]["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "Pod", **template}


def _admitted(kube: Kube, namespace: str, pod: dict[str, Any]) -> tuple[bool, str]:
    try:
        kube.create(f"/api/v1/namespaces/{namespace}/pods", pod, params={"dryRun": "All"})
        return True, ""
    except ApiError as e:
        assert e.status == 403, e.message
        return False, e.message


@pytest.fixture
def restricted(kube: Kube, namespace: str) -> str:
    kube.merge_patch(f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": ENFORCE}})
    for name in ("psa", "psa-multi"):  # the trainer's ServiceAccount, which admission looks up
        sa = builders.service_account(builders.Owner(name=name, namespace=namespace, uid="1111-2222"))
        sa["metadata"].pop("ownerReferences")  # no such owner: the garbage collector would delete it
        kube.create(f"/api/v1/namespaces/{namespace}/serviceaccounts", sa)
    return namespace


def _single(namespace: str) -> dict[str, Any]:
    owner = builders.Owner(name="psa", namespace=namespace, uid="1111-2222")
    return _pod(builders.job(owner, make_spec(), SETTINGS), namespace)


def _multinode(namespace: str) -> dict[str, Any]:
    owner = builders.Owner(name="psa-multi", namespace=namespace, uid="1111-2222")
    spec = make_spec(training={"nodes": 2})
    return _pod(multinode.job(owner, spec, SETTINGS, attempt=1, master_addr="10.96.0.10"), namespace)


@pytest.mark.parametrize("build", [_single, _multinode], ids=["single-pod", "multi-node"])
def test_the_trainer_pod_is_admitted_under_enforced_restricted(kube, restricted, build):
    pod = build(restricted)
    assert restricted_violations(pod) == []
    ok, message = _admitted(kube, restricted, pod)
    assert ok, message


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["spec"]["containers"][0]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(pod: dict[str, Any]) -> None:
        node = pod
        *parents, last = path.split(".")
        for p in parents:
            node = _container(pod) if p == "container" else node.setdefault(p, {})
        node[last] = value
    return apply


# One control of the restricted profile (baseline included) broken per variant.
BROKEN: dict[str, Callable[[dict[str, Any]], None]] = {
    # The API server refuses privileged with allowPrivilegeEscalation false as invalid (422), before admission.
    "privileged": lambda pod: _container(pod)["securityContext"].update(privileged=True, allowPrivilegeEscalation=True),
    "privilege escalation": _set("container.securityContext.allowPrivilegeEscalation", True),
    "capability added": _set("container.securityContext.capabilities", {"drop": ["ALL"], "add": ["NET_ADMIN"]}),
    "capabilities not dropped": _set("container.securityContext.capabilities", {}),
    "root user": _set("container.securityContext.runAsUser", 0),
    "runAsNonRoot false": _set("container.securityContext.runAsNonRoot", False),
    "seccomp unconfined": _set("spec.securityContext.seccompProfile", {"type": "Unconfined"}),
    "host network": _set("spec.hostNetwork", True),
    "host PID": _set("spec.hostPID", True),
    "host port": _set("container.ports", [{"containerPort": 8080, "hostPort": 8080}]),
    "hostPath volume": lambda pod: pod["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/etc"}}),
    "unsafe sysctl": _set("spec.securityContext.sysctls", [{"name": "kernel.msgmax", "value": "65536"}]),
}


@pytest.mark.parametrize("control", list(BROKEN))
def test_the_mirror_and_the_admission_agree_on_each_control(kube, restricted, control):
    pod = _single(restricted)
    BROKEN[control](pod)
    ok, message = _admitted(kube, restricted, pod)
    assert not ok, f"the API server admitted a pod with {control}"
    assert "violates PodSecurity" in message and '"restricted:' in message, message
    assert restricted_violations(pod), f"the mirror misses {control}; the server says: {message}"
