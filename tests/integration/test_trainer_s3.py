"""The trainer end to end against a real S3 server (moto standalone on loopback): train the tiny
Phi-3 model, check what lands in the bucket, load the adapter with PEFT; survive a storage outage;
SIGTERM -> checkpoint -> exit 4 -> resume; two processes with gloo.

Each training run is a few dozen steps of the tiny model (seconds of CPU each).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.status_api import StatusApi
from tests.support.trainer_run import (
    DATASET,
    config,
    logits_before_and_after,
    progress_lines,
    run_in_process,
    subprocess_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

def test_train_to_s3_and_load_the_adapter(s3_bucket, tiny_model, tmp_path, monkeypatch, capsys, caplog):
    caplog.set_level("INFO", logger="lft_trainer")
    s3_bucket.put_bytes("data/train.jsonl", DATASET.read_bytes())  # the dataset comes from the bucket too
    cfg = config(tiny_model, s3_bucket.uri("run"), s3_bucket.endpoint_url, dataset=s3_bucket.uri("data/train.jsonl"))
    cfg["output"]["mergeAdapter"] = True
    code, term = run_in_process(cfg, tmp_path, monkeypatch)
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert term["outcome"] == "succeeded" and term["adapter"]["uri"] == f"s3://{s3_bucket.name}/run/adapter"

    # Files in the bucket, with the sha256 the summary and the termination message claim.
    keys = s3_bucket.keys("run/")
    summary = json.loads(s3_bucket.get_bytes("run/training_summary.json"))
    names = {f["name"] for f in summary["files"]}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "chat_template.jinja"} <= names
    for f in summary["files"]:
        body = s3_bucket.get_bytes(f"run/adapter/{f['name']}")
        assert len(body) == f["size"] and hashlib.sha256(body).hexdigest() == f["sha256"], f["name"]
    assert {f["name"]: f["sha256"] for f in term["adapter"]["files"]} == {f["name"]: f["sha256"] for f in summary["files"]}

    # Checkpoints: complete (manifest) and retention keepLast=1.
    ckpts = sorted({k.split("/")[2] for k in keys if k.startswith("run/checkpoints/")})
    assert ckpts == ["checkpoint-40"]
    assert "run/checkpoints/checkpoint-40/manifest.json" in keys

    # The fine-tune helped, by a clear margin.
    m = summary["metrics"]
    assert m["evalLossAfter"] < m["evalLossBefore"] - 1.0, m
    assert term["metrics"]["evalLossBefore"] == pytest.approx(m["evalLossBefore"], abs=1e-4)  # 4 decimals on the wire
    assert summary["steps"] == summary["totalSteps"] == 40 and summary["resumedFromStep"] is None
    assert summary["dataset"]["rowsChecked"] == {"train": 480} and summary["dataset"]["sampled"] is False
    assert summary["tokensSeen"] > 0 and summary["trainableParameters"] > 0
    assert set(summary["libraryVersions"]) >= {"torch", "transformers", "peft", "trl"}

    # Progress JSON lines, steps increasing, percent up to 100.
    events = progress_lines(out)
    logs = [e for e in events if e["kind"] == "log"]
    steps = [e["step"] for e in logs]
    assert steps == sorted(steps) and len(set(steps)) == len(steps) and steps[-1] == 40 and len(steps) >= 5
    # The performance plan comes first (before the weights load), then the step-0 evaluation.
    assert events[0]["kind"] == "plan" and events[0]["performance"]["microBatchSize"] == 8
    assert events[1]["kind"] == "eval" and events[1]["step"] == 0 and events[1]["totalSteps"] == 40
    perf = summary["performance"]  # measured on the CPU: no GPU peak, so no MFU
    assert perf["tokensPerSecond"] > 0 and perf["flopsPerToken"] > 0 and "mfuPercent" not in perf
    assert events[-1]["kind"] == "end" and events[-1]["percent"] == 100.0
    assert all(e["tokensPerSecond"] > 0 for e in logs[1:])
    assert any(e["kind"] == "checkpoint" for e in events)
    check_history(s3_bucket, summary, events)
    check_samples(s3_bucket, summary, events, term)

    # PEFT loads the adapter from what was uploaded, and it changes the logits.
    import torch
    from transformers import AutoModelForCausalLM

    local = tmp_path / "downloaded"
    local.mkdir()
    for f in summary["files"]:
        (local / f["name"]).write_bytes(s3_bucket.get_bytes(f"run/adapter/{f['name']}"))
    ids, before, after = logits_before_and_after(tiny_model, local)
    assert (after - before).abs().max().item() > 0.1

    # A servable adapter: adapter_config.json names the base as given (not the pod's copy), so PEFT's
    # AutoPeftModelForCausalLM loads it from the adapter alone; our model card; the vLLM verdict.
    adapter_config = json.loads((local / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(tiny_model) and adapter_config["revision"] is None
    assert summary["servability"] == {"engine": "vLLM", "servable": True, "reasons": [], "notes": []}
    assert term["servability"] == summary["servability"]
    assert "PeftModel.from_pretrained" in summary["howToLoad"] and "AutoPeftModelForCausalLM" in summary["howToLoad"]
    card = (local / "README.md").read_text()
    assert f"# LoRA adapter for {tiny_model}" in card and "--enable-lora --lora-modules" in card
    assert "vllm serve" in card and "vLLM can serve the adapter." in card
    assert "servability: vLLM can serve the adapter." in caplog.text
    from peft import AutoPeftModelForCausalLM

    with torch.no_grad():
        auto = AutoPeftModelForCausalLM.from_pretrained(local)(ids).logits
    assert torch.allclose(auto, after, atol=1e-5) and (auto - before).abs().max().item() > 0.1

    # The merged model (output.mergeAdapter) gives the adapter's logits without PEFT.
    merged = tmp_path / "merged"
    merged.mkdir()
    for key in s3_bucket.keys("run/merged/"):
        (merged / key.rsplit("/", 1)[-1]).write_bytes(s3_bucket.get_bytes(key))
    with torch.no_grad():
        merged_logits = AutoModelForCausalLM.from_pretrained(merged)(ids).logits
    assert torch.allclose(merged_logits, after, atol=1e-4)


def history_rows(s3_bucket, prefix: str = "run") -> list[dict]:
    return [json.loads(line) for line in s3_bucket.get_bytes(f"{prefix}/metrics.jsonl").decode().splitlines()]


def check_history(s3_bucket, summary: dict, events: list[dict]) -> None:
    """metrics.jsonl and loss.png next to the adapter (40 steps, loggingSteps 5, evalSteps 20, a checkpoint at
    20 and 40), listed in the summary and in status.artifacts (the progress lines carry what is patched)."""
    rows = history_rows(s3_bucket)
    assert [r["step"] for r in rows] == [0, 1, 5, 10, 15, 20, 25, 30, 35, 40]
    assert all(list(r) == ["step", "epoch", "loss", "learningRate", "gradNorm", "tokensSeen", "evalLoss"] for r in rows)
    assert [r["step"] for r in rows if r["evalLoss"] is not None] == [0, 20, 40]
    assert rows[0]["evalLoss"] == pytest.approx(summary["metrics"]["evalLossBefore"]) and rows[0]["loss"] is None
    assert rows[-1]["evalLoss"] == pytest.approx(summary["metrics"]["evalLossAfter"])
    # The learning rate decays to 0 at the last step.
    assert all(r["loss"] > 0 and r["learningRate"] >= 0 and r["gradNorm"] > 0 and r["epoch"] > 0 for r in rows[1:]), rows
    tokens = [r["tokensSeen"] for r in rows]
    assert tokens == sorted(tokens) and tokens[-1] == summary["tokensSeen"]

    base = f"s3://{s3_bucket.name}/run"
    arts = summary["artifacts"]
    assert {k: v for k, v in arts.items() if k != "lossPlot"} == {
        "adapter": f"{base}/adapter", "merged": f"{base}/merged", "summary": f"{base}/training_summary.json",
        "metrics": f"{base}/metrics.jsonl", "samples": f"{base}/samples.jsonl"}
    keys = s3_bucket.keys("run/")
    assert all(any(k == uri[len(base) - 3:] or k.startswith(uri[len(base) - 3:] + "/") for k in keys)
               for uri in arts.values())
    if importlib.util.find_spec("matplotlib") is None:  # optional at run time; the image has it
        assert "lossPlot" not in arts and summary["lossPlotSkipped"] == "matplotlib is not installed"
    else:
        png = s3_bucket.get_bytes("run/loss.png")
        assert arts["lossPlot"] == f"{base}/loss.png" and png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    # status.artifacts: the history once the first checkpoint is saved, everything at the end.
    reported = [e for e in events if e["kind"] == "artifacts"]
    assert reported[0]["step"] < 40 and reported[0]["artifacts"]["metrics"] == f"{base}/metrics.jsonl"
    assert reported[-1]["artifacts"] == arts and events[-1]["artifacts"] == arts


def check_samples(s3_bucket, summary: dict, events: list[dict], term: dict) -> None:
    """evaluation.samples (default 3): the first eval rows, completed by the base and the tuned model; the end
    metrics: perplexity and the eval loss change (the Eval-Δ printer column)."""
    rows = [json.loads(line) for line in s3_bucket.get_bytes("run/samples.jsonl").decode().splitlines()]
    assert len(rows) == 3 and all(list(r) == ["prompt", "reference", "baseOutput", "tunedOutput"] for r in rows)
    assert all(r["prompt"].endswith("<|assistant|>\n") and r["reference"] for r in rows), rows
    # The random base model babbles up to maxNewTokens; after 40 steps the tiny model has not learnt the answers,
    # but it has learnt to end its turn within a few tokens.
    assert any(r["baseOutput"] != r["tunedOutput"] for r in rows), rows
    assert sum(len(r["tunedOutput"]) for r in rows) < sum(len(r["baseOutput"]) for r in rows), rows
    block = summary["samples"]
    assert block["heldOut"] is True and block["count"] == 3 and block["maxNewTokens"] == 64
    assert block["rows"] == rows and block["seconds"] >= 0 and "stoppedEarly" not in block
    m, end = summary["metrics"], events[-1]
    change = m["evalLossAfter"] - m["evalLossBefore"]
    assert end["evalLossChange"] == pytest.approx(change, abs=1e-4) and end["evalLossChange"] < -1.0
    assert end["perplexity"] == pytest.approx(math.exp(m["evalLossAfter"]), rel=1e-3)
    assert m["perplexityAfter"] == pytest.approx(math.exp(m["evalLossAfter"]))
    assert term["metrics"]["evalLossChange"] == end["evalLossChange"]
    assert term["metrics"]["perplexity"] == end["perplexity"]


def test_run_completes_through_a_storage_outage(s3_bucket, flaky_proxy, tiny_model, tmp_path, monkeypatch, capsys):
    flaky_proxy.arm_outage(b"/run/checkpoints/checkpoint-10/", seconds=4)
    cfg = config(tiny_model, s3_bucket.uri("run"), flaky_proxy.endpoint_url, maxSteps=30, evalSteps=30)
    cfg["checkpointing"] = {"everySteps": 10, "keepLast": 3}
    code, term = run_in_process(cfg, tmp_path, monkeypatch)
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    outage = flaky_proxy.outages[0]
    assert outage.ended is not None and outage.reset_connections + outage.refused_connections > 0
    keys = s3_bucket.keys("run/")
    for step in (10, 20, 30):
        manifest = json.loads(s3_bucket.get_bytes(f"run/checkpoints/checkpoint-{step}/manifest.json"))
        for f in manifest["files"]:
            assert keys[f"run/checkpoints/checkpoint-{step}/{f['name']}"] == f["size"]
    for f in term["adapter"]["files"]:
        assert keys[f"run/adapter/{f['name']}"] == f["size"]
    assert "run/training_summary.json" in keys


def test_sigterm_checkpoints_exits_4_and_resumes(s3_bucket, s3_server, tiny_model, tmp_path):
    cfg = config(tiny_model, s3_bucket.uri("run"), s3_bucket.endpoint_url, maxSteps=60, evalSteps=60,
                 loggingSteps=1)
    cfg["checkpointing"] = {"everySteps": 10, "keepLast": 2}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    cmd = [sys.executable, "-m", "lft_trainer", "--config", str(path)]

    proc = subprocess.Popen(cmd, env=subprocess_env(s3_server, tmp_path, "first", uid="uid-1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    errs: list[str] = []
    threading.Thread(target=lambda: errs.extend(proc.stderr), daemon=True).start()
    signalled = False
    for line in proc.stdout:  # SIGTERM once the first checkpoint is uploaded, mid-run
        lines.append(line)
        if not signalled and '"kind":"checkpoint"' in line:
            proc.send_signal(signal.SIGTERM)
            signalled = True
    code = proc.wait(timeout=300)
    assert signalled, "".join(lines[-5:]) + "".join(errs[-30:])
    assert code == 4, "".join(errs[-40:])
    term = json.loads((tmp_path / "first.term").read_text())
    assert term["outcome"] == "preempted" and 10 <= term["step"] < 60
    stopped_at = term["step"]
    manifest = json.loads(s3_bucket.get_bytes(f"run/checkpoints/checkpoint-{stopped_at}/manifest.json"))
    assert {"adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json"} <= \
        {f["name"] for f in manifest["files"]}
    assert "run/adapter/adapter_config.json" not in s3_bucket.keys("run/")
    # The history was refreshed at the SIGTERM checkpoint (loggingSteps 1: every step, and the eval before).
    assert [r["step"] for r in history_rows(s3_bucket)] == list(range(stopped_at + 1))

    second = subprocess.run(cmd, check=False, env=subprocess_env(s3_server, tmp_path, "second", uid="uid-1"), capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-4000:]
    term2 = json.loads((tmp_path / "second.term").read_text())
    assert term2["resumedFromStep"] == stopped_at and term2["step"] == term2["totalSteps"] == 60
    summary = json.loads(s3_bucket.get_bytes("run/training_summary.json"))
    assert summary["resumedFromStep"] == stopped_at and summary["steps"] == 60
    assert summary["metrics"]["evalLossBefore"] is not None  # carried over from the first attempt's checkpoint
    rows = history_rows(s3_bucket)  # both attempts: the checkpoint's log history goes on
    assert [r["step"] for r in rows] == list(range(61)) and [r["step"] for r in rows if r["evalLoss"]] == [0, 60]
    assert rows[0]["evalLoss"] == pytest.approx(summary["metrics"]["evalLossBefore"])
    steps = [e["step"] for e in progress_lines(second.stdout) if e["kind"] == "log"]
    assert steps and steps[0] > stopped_at  # no step was trained twice
    # The resumed attempt regenerates the base outputs with the adapter disabled.
    samples = summary["samples"]["rows"]
    assert len(samples) == 3 and all(r["baseOutput"] is not None and r["tunedOutput"] is not None for r in samples)
    assert term2["metrics"]["evalLossChange"] < 0


def test_adapter_of_a_base_from_s3_names_the_uri_not_the_pod_s_copy(s3_bucket, tiny_model, tmp_path, monkeypatch,
                                                                      capsys):
    for f in tiny_model.iterdir():  # the trainer downloads the base to <work>/model
        s3_bucket.put_bytes(f"models/tiny/{f.name}", f.read_bytes())
    base_uri = s3_bucket.uri("models/tiny")
    cfg = config(base_uri, s3_bucket.uri("run"), s3_bucket.endpoint_url, maxSteps=4, evalSteps=4, loggingSteps=2)
    code, term = run_in_process(cfg, tmp_path, monkeypatch)
    assert code == 0, capsys.readouterr().out[-3000:]
    adapter_config = json.loads(s3_bucket.get_bytes("run/adapter/adapter_config.json"))
    assert adapter_config["base_model_name_or_path"] == base_uri, adapter_config["base_model_name_or_path"]
    summary = json.loads(s3_bucket.get_bytes("run/training_summary.json"))
    assert summary["servability"]["servable"] is True and term["servability"]["servable"] is True
    assert any("cannot fetch the base model " + base_uri in n for n in summary["servability"]["notes"])
    assert f"and {base_uri} to ./base" in summary["howToLoad"]
    card = s3_bucket.get_bytes("run/adapter/README.md").decode()
    assert f"PEFT and vLLM cannot fetch the base model {base_uri} themselves" in card and "vllm serve ./base" in card

    # Loaded as the card says: the base downloaded to a directory, passed to PeftModel.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    local = tmp_path / "downloaded"
    local.mkdir()
    for key in s3_bucket.keys("run/adapter/"):
        (local / key.rsplit("/", 1)[-1]).write_bytes(s3_bucket.get_bytes(key))
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), local)
    assert tuned.peft_config["default"].base_model_name_or_path == base_uri


def test_two_processes_with_gloo(s3_bucket, s3_server, tiny_model, tmp_path):
    for f in tiny_model.iterdir():  # the base model comes from the bucket: the launcher downloads it once
        s3_bucket.put_bytes(f"models/tiny/{f.name}", f.read_bytes())
    cfg = config(s3_bucket.uri("models/tiny"), s3_bucket.uri("ddp"), s3_bucket.endpoint_url, maxSteps=12, evalSteps=12,
                 numProcesses=2, batchSize=4, loggingSteps=4)
    cfg["checkpointing"] = {"everySteps": 6, "keepLast": 2}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    res = subprocess.run([sys.executable, "-m", "lft_trainer", "--config", str(path)], check=False,
                         env=subprocess_env(s3_server, tmp_path, "ddp"), capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-4000:]
    summary = json.loads(s3_bucket.get_bytes("ddp/training_summary.json"))
    assert summary["numProcesses"] == 2 and summary["steps"] == 12
    assert summary["metrics"]["evalLossAfter"] < summary["metrics"]["evalLossBefore"]
    term = json.loads((tmp_path / "ddp.term").read_text())
    assert term["outcome"] == "succeeded" and term["adapter"]["files"]
    # Only rank 0 reports: one progress line per logged step.
    steps = [e["step"] for e in progress_lines(res.stdout) if e["kind"] == "log"]
    assert steps == sorted(set(steps)) and steps[-1] == 12
    keys = s3_bucket.keys("ddp/")
    assert "ddp/checkpoints/checkpoint-12/manifest.json" in keys and "ddp/adapter/adapter_model.safetensors" in keys
    assert len(s3_bucket.get_bytes("ddp/samples.jsonl").decode().splitlines()) == 3  # rank 0 only, once


def test_assistant_only_loss_and_prompt_completion_rows(tiny_model, tmp_path, monkeypatch, capsys):
    """Assistant-only loss (TRL swaps in its Phi-3 training template) and prompt/completion rows, to file://."""
    cfg = config(tiny_model, f"file://{tmp_path}/out", "http://unused", maxSteps=6, evalSteps=6,
                 assistantOnlyLoss=True)
    cfg.pop("storage")
    code, _ = run_in_process(cfg, tmp_path, monkeypatch)
    assert code == 0, capsys.readouterr().out[-3000:]
    assert (tmp_path / "out/adapter/adapter_model.safetensors").is_file()

    rows = [json.loads(x)["messages"] for x in DATASET.read_text().splitlines()[:60]]
    pc = tmp_path / "pc.jsonl"
    pc.write_text("".join(json.dumps({"prompt": m[-2]["content"], "completion": m[-1]["content"]}) + "\n" for m in rows))
    cfg = config(tiny_model, f"file://{tmp_path}/out2", "http://unused", dataset=str(pc), maxSteps=4, evalSteps=4)
    cfg.pop("storage")
    cfg["dataset"]["evalFraction"] = 0  # no eval split: the samples are the last train rows, not held out
    cfg["evaluation"] = {"samples": 2, "maxNewTokens": 8}
    code, _ = run_in_process(cfg, tmp_path, monkeypatch)
    assert code == 0, capsys.readouterr().out[-3000:]
    summary = json.loads((tmp_path / "out2/training_summary.json").read_text())
    assert summary["dataset"]["rowsPerFormat"] == {"train": {"prompt-completion:standard": 60}} and summary["steps"] == 4
    samples = [json.loads(x) for x in (tmp_path / "out2/samples.jsonl").read_text().splitlines()]
    assert [(r["prompt"], r["reference"]) for r in samples] == [(m[-2]["content"], m[-1]["content"]) for m in rows[-2:]]
    assert summary["samples"]["heldOut"] is False and summary["samples"]["maxNewTokens"] == 8


def test_resume_from_the_final_checkpoint_trains_no_extra_step(s3_bucket, tiny_model, tmp_path, monkeypatch,
                                                                capsys):
    # An attempt that dies after uploading its last checkpoint (or a re-run into the same output)
    # resumes at step == maxSteps: it must finish there, not train step maxSteps + 1.
    cfg = config(tiny_model, s3_bucket.uri("run"), s3_bucket.endpoint_url, maxSteps=20, evalSteps=20)
    cfg["checkpointing"] = {"everySteps": 10, "keepLast": 2}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    code, first = run_in_process(cfg, tmp_path / "a", monkeypatch)
    assert code == 0 and first["step"] == 20
    code, again = run_in_process(cfg, tmp_path / "b", monkeypatch)
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert again["resumedFromStep"] == 20 and again["step"] == again["totalSteps"] == 20
    assert not [e for e in progress_lines(out.split('"kind":"end"')[-1]) if e.get("step", 0) > 20]
    summary = json.loads(s3_bucket.get_bytes("run/training_summary.json"))
    assert summary["steps"] == 20 and summary["resumedFromStep"] == 20


# -- output ownership and checkpoint health (issue: every run ends in a true, explained state) -------------
def as_resource(monkeypatch, name: str, uid: str) -> None:
    """The identity the operator gives a trainer pod (env LFT_NAMESPACE/LFT_NAME/LFT_UID)."""
    monkeypatch.setenv("LFT_NAMESPACE", "team")
    monkeypatch.setenv("LFT_NAME", name)
    monkeypatch.setenv("LFT_UID", uid)


def finished_run_a(s3_bucket, tiny_model, tmp_path: Path, monkeypatch, capsys, prefix: str, keep_last: int) -> dict:
    """Resource team/ft-a (uid-a) trains 10 steps into <bucket>/<prefix>; returns its config. Work dirs a, b, c."""
    cfg = config(tiny_model, s3_bucket.uri(prefix), s3_bucket.endpoint_url, maxSteps=10, evalSteps=10)
    cfg["checkpointing"] = {"everySteps": 5, "keepLast": keep_last}
    for d in ("a", "b", "c"):
        (tmp_path / d).mkdir()
    as_resource(monkeypatch, "ft-a", "uid-a")
    code, _ = run_in_process(cfg, tmp_path / "a", monkeypatch)
    assert code == 0, capsys.readouterr().out[-3000:]
    return cfg


@pytest.fixture
def status_api(monkeypatch):
    server = StatusApi()
    monkeypatch.setenv("LFT_KUBE_API_URL", server.url)
    monkeypatch.setenv("LFT_STATUS_MIN_INTERVAL_SECONDS", "60")  # only forced patches, mostly
    yield server
    server.stop()


def test_another_runs_output_is_refused_then_replaced_with_overwrite(s3_bucket, tiny_model, tmp_path, monkeypatch,
                                                                      capsys):
    cfg = finished_run_a(s3_bucket, tiny_model, tmp_path, monkeypatch, capsys, "run", keep_last=1)
    a_keys = s3_bucket.keys("run/")

    as_resource(monkeypatch, "ft-b", "uid-b")  # another resource, same output prefix
    started = time.monotonic()
    code, term = run_in_process(cfg, tmp_path / "b", monkeypatch)
    assert code == 3 and term["outcome"] == "invalid_input" and term["reason"] == "OutputInUse"
    assert "LoRAFineTune team/ft-a (uid uid-a)" in term["message"] and "output.overwrite" in term["message"]
    assert time.monotonic() - started < 30  # pre-flight: before the model loads
    assert s3_bucket.keys("run/") == a_keys  # nothing of A deleted or changed

    cfg["output"]["overwrite"] = True
    code, term = run_in_process(cfg, tmp_path / "c", monkeypatch)
    assert code == 0, capsys.readouterr().out[-3000:]
    assert term.get("resumedFromStep") is None and term["step"] == 10  # from step 0, not A's checkpoint
    summary = json.loads(s3_bucket.get_bytes("run/training_summary.json"))
    assert summary["runIdentity"]["uid"] == "uid-b" and summary["resumedFromStep"] is None
    assert [r["uid"] for r in summary["replacedRuns"]] == ["uid-a"]
    assert json.loads(s3_bucket.get_bytes("run/adapter/lft_run.json"))["uid"] == "uid-b"
    assert history_rows(s3_bucket)[-1]["step"] == 10 and summary["artifacts"]["metrics"].endswith("/run/metrics.jsonl")
    manifests = [k for k in s3_bucket.keys("run/checkpoints/") if k.endswith("/manifest.json")]
    assert manifests and all(json.loads(s3_bucket.get_bytes(k))["runIdentity"]["uid"] == "uid-b" for k in manifests)


def test_failed_checkpoint_uploads_show_in_the_status_and_training_goes_on(s3_bucket, flaky_proxy, status_api,
                                                                           tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LFT_STORAGE_RETRY_SECONDS", "1")  # give up on checkpoint-10 soon
    # Only checkpoint-10's uploads fail, whatever the timing: a timed outage also failed 20, 30 and 40
    # when ten steps took less than the outage (seen in CI).
    flaky_proxy.reject_requests(f"PUT /{s3_bucket.name}/run/checkpoints/checkpoint-10/".encode())
    cfg = config(tiny_model, s3_bucket.uri("run"), flaky_proxy.endpoint_url, maxSteps=40, evalSteps=40)
    cfg["checkpointing"] = {"everySteps": 10, "keepLast": 2}
    as_resource(monkeypatch, "ft-h", "uid-h")
    code, term = run_in_process(cfg, tmp_path, monkeypatch)
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    health = [p["status"]["checkpointHealth"] for p in status_api.bodies if "checkpointHealth" in p["status"]]
    first_bad = next(i for i, h in enumerate(health) if not h["healthy"])
    bad = health[first_bad]
    assert bad["failedUploads"] == 1 and "checkpoint 10" in bad["message"] and "StorageError" in bad["message"]
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in bad["message"]
    recovered = next(h for h in health[first_bad:] if h["healthy"])  # the next checkpoint's upload
    assert recovered["failedUploads"] == 0 and recovered["lastUploadedStep"] == 20
    assert flaky_proxy.rejected_requests >= 2  # the first try and the retry
    assert any(e["kind"] == "checkpoint_failed" for e in progress_lines(out))
    assert "run/checkpoints/checkpoint-40/manifest.json" in s3_bucket.keys("run/")


def test_a_failed_adapter_upload_is_an_error_not_a_success(s3_bucket, flaky_proxy, tiny_model, tmp_path,
                                                          monkeypatch, capsys):
    monkeypatch.setenv("LFT_STORAGE_RETRY_SECONDS", "1")
    flaky_proxy.arm_outage(f"PUT /{s3_bucket.name}/run/adapter/".encode(), seconds=60)
    cfg = config(tiny_model, s3_bucket.uri("run"), flaky_proxy.endpoint_url, maxSteps=6, evalSteps=6)
    code, term = run_in_process(cfg, tmp_path, monkeypatch)
    assert code == 1, capsys.readouterr().out[-3000:]
    assert term["outcome"] == "error" and term["reason"] == "StorageError" and "adapter" in term["message"]
    assert "run/training_summary.json" not in s3_bucket.keys("run/")


def test_resume_from_continues_deliberately_from_another_runs_checkpoint(s3_bucket, tiny_model, tmp_path,
                                                                         monkeypatch, capsys):
    cfg = finished_run_a(s3_bucket, tiny_model, tmp_path, monkeypatch, capsys, "old", keep_last=2)
    old_keys = s3_bucket.keys("old/")

    as_resource(monkeypatch, "ft-b", "uid-b")
    cfg["output"] = {"uri": s3_bucket.uri("new"), "resumeFrom": s3_bucket.uri("old/checkpoints/checkpoint-7")}
    code, term = run_in_process(cfg, tmp_path / "b", monkeypatch)
    assert code == 3 and term["reason"] == "InvalidResumeFrom" and "output.resumeFrom" in term["message"]

    cfg["output"]["resumeFrom"] = s3_bucket.uri("old/checkpoints/checkpoint-5")
    code, term = run_in_process(cfg, tmp_path / "c", monkeypatch)
    assert code == 0, capsys.readouterr().out[-3000:]
    assert term["resumedFromStep"] == 5 and term["step"] == 10
    summary = json.loads(s3_bucket.get_bytes("new/training_summary.json"))
    assert summary["resumedFrom"]["run"]["uid"] == "uid-a" and summary["runIdentity"]["uid"] == "uid-b"
    assert s3_bucket.keys("old/") == old_keys  # the other run's checkpoints are read, never changed
