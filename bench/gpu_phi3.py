"""GPU throughput: the Phi-3 cookbook recipe's settings vs `training.performance: auto`, through our trainer.

    python bench/gpu_phi3.py --out DIR [--steps 14] [--cases recipe,auto,...] [--budget-seconds 420]
    python bench/gpu_phi3.py --out DIR --small      # CPU smoke test of this script (2-layer model)

No machine here reaches the Hugging Face hub, so the model has Phi-3-mini's exact architecture (hidden
3072, 32 layers, 32 heads, MLP 8192, vocab 32064, 3.8 B parameters) with random weights, and the tiny
CPU model's tokenizer. The data are chat rows of 100 to 1,900 tokens, packed into 2,048-token sequences.

Cases (each `python -m lft_trainer` in its own process, the same rows, the same effective batch of
4 x 2048 tokens per optimizer step, LoRA r16/alpha32/dropout 0.05 on all linear layers):
  recipe        sample_finetune.py's settings: micro-batch 4, packing, gradient checkpointing, performance
                off; its flash_attention_2 is not installed here, so SDPA (what a copy of the recipe gets)
  auto          performance: auto (batchSize and gradientCheckpointing unset)
  auto-nofused  auto with fusedKernels: false (what the Liger kernels add)
  qlora-recipe  / qlora-auto: the same two with lora.quantization 4bit
  auto-sdpa     auto with attnImplementation: sdpa (what the varlen attention kernel adds)
  auto-e16      the spec's default effective batch (4 x 4 sequences): auto chooses the split
  auto-compile  auto with compile: true (torch.compile through TRL's torch_compile)
  auto-nodropout auto with LoRA dropout 0 (a user's choice, not the plan's: what the dropout copies cost)
  oom-backoff   effective batch 32 with LFT_GPU_MEMORY_GIB=1000: a real CUDA out-of-memory error at the
                plan's micro-batch 32, halved until it fits, effective batch kept
Tokens/s is the trainer's steady-state figure (optimizer steps after the first two, timed inside the
steps); MFU = model FLOPs/token x tokens/s / the GPU's dense bf16 peak (formula: lft_trainer.performance.plan).
Peak memory: torch's peak reserved memory (trainer) and nvidia-smi's peak for the process (here).
Before the cases, a correctness check: the varlen attention kernel on a packed batch gives the same loss
as the rows padded (on the GPU, bf16).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "api"), str(REPO / "trainer_image")]

PHI3_MINI = dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096)
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=4, vocab_size=32064, max_position_embeddings=4096)

RECIPE_TRAINING = {"batchSize": 4, "gradientAccumulationSteps": 1, "packing": True, "gradientCheckpointing": True,
                   "performance": "off"}
AUTO_TRAINING = {"gradientAccumulationSteps": 1, "packing": True, "performance": "auto"}
CASES = {
    "recipe": ({**RECIPE_TRAINING}, {}, {"attnImplementation": "sdpa"}),
    "auto": ({**AUTO_TRAINING}, {}, {}),
    "auto-nofused": ({**AUTO_TRAINING, "fusedKernels": False}, {}, {}),
    "qlora-recipe": ({**RECIPE_TRAINING}, {"quantization": "4bit"}, {"attnImplementation": "sdpa"}),
    "qlora-auto": ({**AUTO_TRAINING}, {"quantization": "4bit"}, {}),
    "auto-sdpa": ({**AUTO_TRAINING}, {}, {"attnImplementation": "sdpa"}),
    # the spec defaults (effective batch 4 x 4): auto may take the whole batch as one micro-batch
    "auto-e16": ({"packing": True}, {}, {}),
    "auto-compile": ({**AUTO_TRAINING, "compile": True}, {}, {}),
    # what LoRA dropout costs: PEFT skips the dropout copy of each adapted layer's input when it is 0
    "auto-nodropout": ({**AUTO_TRAINING}, {"dropout": 0.0}, {}),
    # back-off: the plan is told the GPU has 1000 GiB, picks micro-batch 32, runs out of memory and halves
    "oom-backoff": ({"packing": True, "gradientAccumulationSteps": 8}, {}, {}),
}
CASE_ENV = {"oom-backoff": {"LFT_GPU_MEMORY_GIB": "1000"}}
CASE_STEPS = {"auto-e16": 8, "oom-backoff": 6}  # 4x and 8x the tokens per step of the others


def pythonpath() -> str:
    """Our packages first, then whatever PYTHONPATH already holds (carried wheels on the device)."""
    return os.pathsep.join([*sys.path[:2], *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])


def build_model(work: Path, shape: dict) -> Path:
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    path = work / "phi3-random"
    if (path / "config.json").exists():
        return path
    tiny = work / "tiny"
    subprocess.run([sys.executable, "-m", "lft_trainer.model.tiny_model", "--output", str(tiny)], check=True,
                   env={**os.environ, "PYTHONPATH": pythonpath()}, capture_output=True)
    cfg = Phi3Config(rope_theta=10000.0, bos_token_id=1, eos_token_id=2, pad_token_id=0, **shape)
    torch.manual_seed(0)
    t0 = time.time()
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Phi3ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(path)
    for f in tiny.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, path / f.name)
    print(f"built a {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B-parameter model in "
          f"{time.time() - t0:.0f} s", flush=True)
    del model
    torch.cuda.empty_cache()
    return path


def build_dataset(work: Path, model_dir: Path, rows: int) -> Path:
    """Chat rows of about 100 to 1,900 tokens (seeded), measured with the model's tokenizer."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    words = "the a model adapter train data row token layer weight batch memory kernel step loss rate".split()
    per_word = len(tok(" ".join(words * 20), add_special_tokens=False)["input_ids"]) / (len(words) * 20)
    rng = random.Random(0)
    path = work / "chat_long.jsonl"
    with path.open("w") as f:
        for _ in range(rows):
            n = int(rng.uniform(100, 1900) / per_word)
            answer = " ".join(rng.choice(words) for _ in range(n))
            f.write(json.dumps({"messages": [{"role": "user", "content": "explain"},
                                             {"role": "assistant", "content": answer}]}) + "\n")
    return path


def check_varlen(model_dir_small: Path) -> dict:
    """Loss of one packed batch with the varlen kernel vs the same rows padded (SDPA)."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from lft_trainer.performance import attention

    name = attention.register()
    cuda = torch.cuda.is_available()
    dev, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    torch.manual_seed(0)
    rows = [{"input_ids": torch.randint(5, 300, (n,)).tolist()} for n in (700, 1300, 48)]
    losses = {}
    for label, impl, free in (("padded-sdpa", "sdpa", False), ("packed-varlen", name, True),
                              ("packed-sdpa", "sdpa", True)):
        batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=free)(rows)
        batch = {k: v.to(dev) if hasattr(v, "to") else v for k, v in batch.items()}
        model = AutoModelForCausalLM.from_pretrained(model_dir_small, attn_implementation=impl, dtype=dtype).to(dev)
        with torch.no_grad():
            losses[label] = round(model(**batch, use_cache=False).loss.item(), 5)
        del model
    out = {"check": "varlen", "kernel": "cuda" if attention.cuda_varlen_kernel() else "cpu-rows", **losses}
    print(json.dumps(out), flush=True)
    return out


class GpuMemoryPoller(threading.Thread):
    """Peak GPU memory used on the device, from nvidia-smi every 0.5 s (the trainer is another process)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak_mib = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set() and shutil.which("nvidia-smi"):
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True).stdout.split()
            if out:
                self.peak_mib = max(self.peak_mib, int(out[0]))
            time.sleep(0.5)


def run_case(name: str, model_dir: Path, data: Path, work: Path, steps: int) -> dict:
    training, lora, model = CASES[name]
    out = work / f"out-{name}"
    shutil.rmtree(out, ignore_errors=True)
    config = {
        "model": {"name": str(model_dir), "dtype": "auto", **model},
        "dataset": {"uri": str(data), "format": "messages", "evalFraction": 0.0},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "targetModules": ["all-linear"], **lora},
        "training": {"maxSteps": steps, "maxLength": 2048, "loggingSteps": 2, "learningRate": 2e-4, **training},
        "checkpointing": {"everySteps": 100000, "keepLast": 1},
        "output": {"uri": str(out)},
    }
    cfg_path = work / f"config-{name}.json"
    cfg_path.write_text(json.dumps(config))
    env = {**os.environ, "LFT_CONFIG": str(cfg_path), "LFT_TERMINATION_LOG": str(work / f"term-{name}.json"),
           "LFT_WORK_DIR": str(work / f"work-{name}"), "PYTHONPATH": pythonpath(), **CASE_ENV.get(name, {})}
    poller = GpuMemoryPoller()
    poller.start()
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "lft_trainer"], env=env, capture_output=True, text=True)
    poller.stop.set()
    poller.join()
    result = {"case": name, "exitCode": proc.returncode, "wallSeconds": round(time.time() - t0, 1),
              "nvidiaSmiPeakGiB": round(poller.peak_mib / 1024, 2)}
    summary_path = out / "training_summary.json"
    if summary_path.exists():
        s = json.loads(summary_path.read_text())
        perf = s.get("performance") or {}
        result.update(tokensPerSecond=perf.get("tokensPerSecond"), mfuPercent=perf.get("mfuPercent"),
                      tflops=perf.get("tflops"), peakMemoryGiB=perf.get("peakMemoryGiB"),
                      estimatedPeakMemoryGiB=perf.get("estimatedPeakMemoryGiB"), plan={
                          k: perf.get(k) for k in ("microBatchSize", "gradientAccumulationSteps", "oomBackoffs",
                                                   "gradientCheckpointing", "fusedKernels", "attention", "batching")},
                      choices=perf.get("choices"), flopsPerToken=perf.get("flopsPerToken"),
                      overallTokensPerSecond=s["metrics"].get("trainTokensPerSecond"), steps=s.get("steps"),
                      lossFirst=next((h["loss"] for h in s.get("logHistory", []) if "loss" in h), None),
                      lossLast=s["metrics"].get("trainLoss"), durations=s.get("durationsSeconds"))
    else:
        result["stderrTail"] = proc.stderr[-2500:]
    print(json.dumps(result), flush=True)
    return result


def ratios(results: list[dict]) -> dict:
    by = {r["case"]: r.get("tokensPerSecond") for r in results}
    out = {}
    for base, fast in (("recipe", "auto"), ("qlora-recipe", "qlora-auto"), ("auto-nofused", "auto"),
                       ("auto-sdpa", "auto"), ("recipe", "auto-e16"),
                       ("auto", "auto-compile"), ("auto", "auto-nodropout")):
        if by.get(base) and by.get(fast):
            out[f"{fast}/{base}"] = round(by[fast] / by[base], 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="/tmp/lft-gpu")
    ap.add_argument("--steps", type=int, default=14)
    ap.add_argument("--cases", default=None, help="default: every case (--small: recipe,auto)")
    ap.add_argument("--budget-seconds", type=float, default=420, help="start no case after this")
    ap.add_argument("--small", action="store_true", help="CPU smoke test: a 2-layer model, two cases")
    args = ap.parse_args()
    import torch

    t0 = time.time()
    versions = {"torch": torch.__version__, "cuda": torch.version.cuda,
                "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    for mod in ("transformers", "trl", "peft", "liger_kernel", "bitsandbytes"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception as exc:
            versions[mod] = f"unavailable: {type(exc).__name__}"
    print(json.dumps(versions), flush=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    small_dir = build_model(work / "small", SMALL)
    results: list[dict] = [check_varlen(small_dir)]
    model_dir = small_dir if args.small else build_model(work, PHI3_MINI)
    data = build_dataset(work, model_dir, rows=400)
    wanted = (args.cases or ("recipe,auto" if args.small else ",".join(CASES))).split(",")
    for name in wanted:
        if time.time() - t0 > args.budget_seconds:
            print(json.dumps({"case": name, "skipped": "over --budget-seconds"}), flush=True)
            continue
        steps = 4 if args.small else CASE_STEPS.get(name, args.steps)
        results.append(run_case(name, model_dir, data, work, steps))
    summary = {"versions": versions, "ratios": ratios(results[1:]), "seconds": round(time.time() - t0)}
    print(json.dumps(summary), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "gpu_phi3.json").write_text(json.dumps({**summary, "results": results}, indent=1))
    return 0 if all(r.get("exitCode", 0) == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
