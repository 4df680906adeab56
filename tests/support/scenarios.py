"""Shared helpers of the end-to-end scenarios: the example resource pointed at a scenario's prefix,
waits on phases and checkpoints, the summary in the bucket."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

from tests.support.kubectl import Kube

S3_SECRET_KEY = "e2e-secret-key-do-not-leak"  # asserted absent from status, events and logs
REPO = Path(__file__).resolve().parents[2]
EXAMPLE = yaml.safe_load((REPO / "examples/tiny-finetune.yaml").read_text())
BUCKET = "lft"


def finetune(namespace: str, name: str, endpoint: str, *, max_steps: int = 120, every_steps: int = 20,
             dataset: str | None = None) -> dict:
    """The example resource, pointed at this scenario's output prefix and the S3 server."""
    body = copy.deepcopy(EXAMPLE)
    body["metadata"] = {"name": name, "namespace": namespace}
    spec = body["spec"]
    spec["training"].update(maxSteps=max_steps, evalSteps=max_steps // 2)
    spec["checkpointing"]["everySteps"] = every_steps
    spec["output"]["uri"] = f"s3://{BUCKET}/{output_prefix(namespace, name)}"
    spec["storage"] = {"endpointUrl": endpoint}
    spec["storageSecretRef"] = {"name": "s3-credentials"}
    if dataset:
        spec["dataset"]["uri"] = dataset
    return body


def output_prefix(namespace: str, name: str) -> str:
    return f"e2e/{namespace}/{name}"


def keys_under(s3, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def phase(kube: Kube, ns: str, name: str) -> str:
    return kube.lft(ns, name).get("status", {}).get("phase", "")


def condition(obj: dict, type_: str) -> dict:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), {})


def wait_phase(kube: Kube, ns: str, name: str, want: str, timeout: float) -> dict:
    def reached():
        obj = kube.lft(ns, name)
        got = obj.get("status", {}).get("phase")
        if got == "Failed" and want != "Failed":
            raise AssertionError(f"{name} Failed: {obj['status'].get('message')}")
        return obj if got == want else None
    return kube.wait_for(f"{name} phase {want}", reached, timeout)


def wait_checkpoint(kube: Kube, ns: str, name: str, timeout: float = 240) -> int:
    def step():
        obj = kube.lft(ns, name)
        if obj.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            raise AssertionError(f"{name} finished before a checkpoint could be awaited")
        return obj.get("status", {}).get("latestCheckpoint", {}).get("step")
    return kube.wait_for(f"{name} first checkpoint", step, timeout, interval=0.5)


def trainer_started(pod: dict) -> bool:
    """Whether the pod's trainer container ever ran (is running, or ended after starting)."""
    for cs in pod.get("status", {}).get("containerStatuses", []):
        state = cs.get("state", {})
        if "running" in state or state.get("terminated", {}).get("startedAt"):
            return True
    return False


def summary(s3, ns: str, name: str) -> dict:
    key = next(k for k in keys_under(s3, output_prefix(ns, name)) if k.endswith("training_summary.json"))
    return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
