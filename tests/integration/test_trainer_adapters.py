"""lora.init pissa and model.adapter end to end against a real S3 server (moto standalone on loopback): a pissa run
publishes the rank-2r adapter converted for the unmodified base; a second run continues it from S3 and starts where
the first ended (its step-0 eval loss is the first run's last one).

Each run is a few steps of the tiny Phi-3 model (seconds of CPU).
"""

from __future__ import annotations

import json

import pytest

from tests.support.trainer_run import DATASET, config, logits_before_and_after, run_in_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_pissa_adapter_is_published_for_the_base_and_continued_from_s3(s3_bucket, tiny_model, tmp_path,
                                                                          monkeypatch):
    s3_bucket.put_bytes("data/train.jsonl", DATASET.read_bytes())
    data = s3_bucket.uri("data/train.jsonl")
    first = config(tiny_model, s3_bucket.uri("first"), s3_bucket.endpoint_url, dataset=data, maxSteps=8, evalSteps=8)
    first["lora"] = {"init": "pissa", "dropout": 0.0}  # r 16
    first["evaluation"] = {"samples": 1, "maxNewTokens": 4}
    code, term = run_in_process(first, tmp_path / "first", monkeypatch)
    assert code == 0, term
    saved = json.loads(s3_bucket.get_bytes("first/adapter/adapter_config.json"))
    assert (saved["r"], saved["lora_alpha"], saved["init_lora_weights"]) == (32, 64, True)
    summary = json.loads(s3_bucket.get_bytes("first/training_summary.json"))
    assert summary["servability"]["notes"] == ["start vLLM with --max-lora-rank 32 (rank 32; the default is 16)"]
    assert term["servability"] == summary["servability"]
    samples = [json.loads(line) for line in s3_bucket.get_bytes("first/samples.jsonl").decode().splitlines()]
    assert len(samples) == 1 and samples[0]["baseOutput"]

    # The published adapter on the unmodified base: the trained model (it changed the logits).
    local = tmp_path / "adapter"
    local.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja"):
        (local / name).write_bytes(s3_bucket.get_bytes(f"first/adapter/{name}"))
    _, before, after = logits_before_and_after(tiny_model, local)
    assert (after - before).abs().max() > 1e-2

    # Continued from S3 with the run's storage credentials: the first eval is the first run's last.
    second = config(tiny_model, s3_bucket.uri("second"), s3_bucket.endpoint_url, dataset=data, maxSteps=4, evalSteps=4)
    second["model"]["adapter"] = s3_bucket.uri("first/adapter")
    second["lora"] = {"dropout": 0.0}
    code, term2 = run_in_process(second, tmp_path / "second", monkeypatch)
    assert code == 0, term2
    assert term2["metrics"]["evalLossBefore"] == pytest.approx(term["metrics"]["evalLoss"], abs=2e-4)
    continued = json.loads(s3_bucket.get_bytes("second/adapter/adapter_config.json"))
    assert (continued["r"], continued["lora_alpha"]) == (32, 64)  # the adapter's shape, not the lora defaults

    # Not an adapter: refused in pre-flight, naming why.
    third = config(tiny_model, s3_bucket.uri("third"), s3_bucket.endpoint_url, dataset=data, maxSteps=2)
    third["model"]["adapter"] = s3_bucket.uri("data")
    code, term3 = run_in_process(third, tmp_path / "third", monkeypatch)
    assert code == 3 and term3["reason"] == "AdapterNotUsable", term3
    assert "no adapter_config.json there" in term3["message"]
