"""Shared helpers of the operator integration tests: a minimal spec, condition lookups, a success
termination message, playing the kubelet for one pod, and a ServiceAccount's kubeconfig."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import yaml

from lft_api.contract import AdapterRef, FileDigest, Metrics, TerminationMessage
from lft_api.resource import LoRAFineTuneSpec
from tests.support.kube import FAKE_NODE, Kube


def make_spec(**overrides) -> LoRAFineTuneSpec:
    """A parsed spec for the pure builders (unit tests, and the Pod Security tests that send what they build)."""
    raw = {
        "model": {"name": "/opt/lft/models/tiny-phi3"},
        "dataset": {"uri": "s3://data/chat.jsonl"},
        "output": {"uri": "s3://out/phi3-chat"},
        "storageSecretRef": {"name": "s3-creds"},
    }
    raw.update(overrides)
    return LoRAFineTuneSpec.model_validate(raw)


def spec(**overrides) -> dict:
    raw = {
        "model": {"name": "/opt/lft/models/tiny-phi3"},
        "dataset": {"uri": "/opt/lft/data/chat_tiny.jsonl"},
        # One prefix per resource: two live resources on one output.uri are refused (OutputInUse).
        "output": {"uri": f"s3://lft-out/run-{uuid.uuid4().hex[:12]}"},
        "training": {"maxSteps": 30},
        # No real node matches: on a full cluster the scheduler and kubelet leave the pods to the test.
        "nodeSelector": {"lft.test/node": FAKE_NODE},
    }
    raw.update(overrides)
    return raw


def cond(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def is_true(status: dict, type_: str) -> bool:
    return cond(status, type_).get("status") == "True"


SUCCESS = TerminationMessage(
    outcome="succeeded",
    reason="Completed",
    adapter=AdapterRef(
        uri="s3://lft-out/run/adapter",
        files=[FileDigest(name="adapter_model.safetensors", size=1234, sha256="0" * 64)],
    ),
    metrics=Metrics(loss=0.42, eval_loss=0.5, eval_loss_before=1.9),
    step=30,
    total_steps=30,
).encode()


def run_pod(kube: Kube, ns: str, name: str, count: int = 1) -> dict:
    pod = kube.wait_for_pod(ns, name, count=count)
    kube.kubelet_bind(pod)
    kube.kubelet_run(pod)
    return pod



def service_account_kubeconfig(kube: Kube, namespace: str, name: str, path: Path) -> str:
    """A kubeconfig that authenticates with a bound token of the ServiceAccount (TokenRequest)."""
    token = kube.service_account_token(namespace, name)
    admin = yaml.safe_load(Path(kube.kubeconfig).read_text())
    cluster = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {"server": cluster["server"], "certificate-authority-data": base64.b64encode(kube.cluster_ca()).decode()},
            }
        ],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)


def lease_holder(kube: Kube, namespace: str, name: str) -> str:
    """The Lease's holderIdentity ("" when free or missing)."""
    lease = kube.get(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}") or {}
    return (lease.get("spec") or {}).get("holderIdentity") or ""
