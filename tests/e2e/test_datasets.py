"""End-to-end: datasets as users have them, on the real cluster with the CPU trainer image. A function-calling
dataset (tool calls rendered by the chat template named in the spec) and a ShareGPT-shaped file (column
mapping) train to Succeeded; the summary records what trained."""

from __future__ import annotations

import hashlib

import pytest

from tests.support.scenarios import BUCKET, REPO, finetune, output_prefix, summary, wait_phase

pytestmark = pytest.mark.e2e


def _upload(s3, namespace: str, name: str, example: str) -> tuple[str, bytes]:
    body = (REPO / "examples/data" / example).read_bytes()
    key = f"{output_prefix(namespace, name)}/data/{example}"
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return f"s3://{BUCKET}/{key}", body


def test_function_calling_dataset_trains(kube, s3, s3_endpoint, namespace):
    name = "tools"
    uri, body = _upload(s3, namespace, name, "tools_tiny.jsonl")
    res = finetune(namespace, name, s3_endpoint, max_steps=20, dataset=uri)
    res["spec"]["model"]["chatTemplate"] = "qwen2_5"  # the tiny model's own (Phi-3) cannot render tool calls
    res["spec"]["training"].update(assistantOnlyLoss=True, maxLength=2048)
    kube.apply(res, namespace)
    wait_phase(kube, namespace, name, "Succeeded", 420)
    ds = summary(s3, namespace, name)["dataset"]
    assert ds["rowsPerFormat"] == {"train": {"messages": 120}}, ds
    assert ds["files"][0]["sha256"] == hashlib.sha256(body).hexdigest()
    assert ds["chatTemplate"]["source"] == "trl:qwen2_5" and ds["train"]["dropped"]["rows"] == 0


def test_sharegpt_file_trains(kube, s3, s3_endpoint, namespace):
    name = "sharegpt"
    uri, _ = _upload(s3, namespace, name, "sharegpt_tiny.jsonl")
    res = finetune(namespace, name, s3_endpoint, max_steps=20, dataset=uri)
    res["spec"]["dataset"]["columns"] = {"preset": "sharegpt"}
    kube.apply(res, namespace)
    wait_phase(kube, namespace, name, "Succeeded", 420)
    s = summary(s3, namespace, name)
    assert s["dataset"]["rowsPerFormat"] == {"train": {"messages": 120}} and s["steps"] == 20
