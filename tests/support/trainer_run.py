"""Running the trainer in a test: the tiny-model config, `python -m lft_trainer` in this process, and its
progress lines. Shared by the trainer integration tests (the tiny_model fixture is in their conftest)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from lft_api.spec import TrainerConfig
from tests.support.tools import ROOT

DATASET = ROOT / "examples/data/chat_tiny.jsonl"


def config(model: Path | str, output: str, endpoint: str, dataset: str = str(DATASET), **training) -> dict:
    t = {"maxSteps": 40, "learningRate": 3e-3, "batchSize": 8, "gradientAccumulationSteps": 1, "maxLength": 128,
         "loggingSteps": 5, "evalSteps": 20, **training}
    return TrainerConfig.model_validate({
        "model": {"name": str(model)}, "dataset": {"uri": dataset, "evalFraction": 0.1},
        "training": t, "checkpointing": {"everySteps": 20, "keepLast": 1},
        "output": {"uri": output}, "storage": {"endpointUrl": endpoint},
    }).to_wire()


def run_in_process(cfg: dict, tmp_path: Path, monkeypatch) -> tuple[int, dict]:
    """`python -m lft_trainer` in this process (saves the imports' seconds); returns (exit code, termination msg)."""
    from lft_trainer.__main__ import main

    tmp_path.mkdir(parents=True, exist_ok=True)  # a sub-directory per run when a test runs several
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    monkeypatch.setenv("LFT_TERMINATION_LOG", str(tmp_path / "termination-log"))
    monkeypatch.setenv("LFT_WORK_DIR", str(tmp_path / "work"))
    previous = signal.getsignal(signal.SIGTERM)
    try:
        code = main(["--config", str(path)])
    finally:
        signal.signal(signal.SIGTERM, previous)  # main installs the trainer's SIGTERM handler
    return code, json.loads((tmp_path / "termination-log").read_text())


def progress_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            obj = json.loads(line)
            if obj.get("event") == "progress":
                out.append(obj)
    return out


def subprocess_env(s3_server, tmp_path: Path, name: str, uid: str | None = None) -> dict:
    """The environment of `python -m lft_trainer` in a subprocess: S3, its own work dir and termination log."""
    env = {**os.environ, **s3_server.env(), "LFT_TERMINATION_LOG": str(tmp_path / f"{name}.term"),
           "LFT_WORK_DIR": str(tmp_path / f"{name}-work"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "api"), str(ROOT / "trainer_image"), os.environ.get("PYTHONPATH", "")])}
    for var in ("LFT_NAME", "LFT_NAMESPACE", "LFT_UID"):  # no identity: a run and its re-run are the same run
        env.pop(var, None)
    if uid:
        env["LFT_UID"] = uid
    return env


def logits_before_and_after(base: Path | str, adapter: Path):
    """A chat prompt's ids (the adapter's tokenizer), the base model's logits on it, and the logits with the adapter
    loaded onto that base by PEFT: (ids, before, after). The adapter changes them when it trained anything."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = AutoTokenizer.from_pretrained(adapter).apply_chat_template(
        [{"role": "user", "content": "What is the capital of Peru?"}], add_generation_prompt=True,
        return_tensors="pt", return_dict=True)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(base)
    with torch.no_grad():
        before = model(ids).logits
        after = PeftModel.from_pretrained(model, adapter)(ids).logits
    return ids, before, after
