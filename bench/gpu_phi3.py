"""GPU path check: our trainer on a Phi-3-mini-shaped model (3.8 B parameters) on one GPU.

No machine here reaches the Hugging Face hub, so the model has Phi-3-mini's exact architecture
(hidden 3072, 32 layers, 32 heads, MLP 8192, vocab 32064) with random weights, and the tokenizer
of the tiny CPU model. What it shows: dtype auto picks bf16, LoRA and QLoRA (4bit NF4) train
through `python -m lft_trainer` with gradient checkpointing, the adapter comes out, and the
throughput and peak GPU memory of each. Loss values of a random model mean nothing.

    python bench/gpu_phi3.py --out DIR [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build_model(path: Path, small: bool = False) -> None:
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    if (path / "config.json").exists():
        return
    tiny = path.parent / "tiny"
    subprocess.run([sys.executable, "-m", "lft_trainer.tiny_model", "--output", str(tiny)], check=True)
    shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4) if small else dict(hidden_size=3072, intermediate_size=8192,
                                                          num_hidden_layers=32, num_attention_heads=32,
                                                          num_key_value_heads=32)
    cfg = Phi3Config(vocab_size=32064, max_position_embeddings=4096, rope_theta=10000.0, bos_token_id=1,
                     eos_token_id=32000, pad_token_id=32000, **shape)
    torch.manual_seed(0)
    t0 = time.time()
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Phi3ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(path)
    for f in tiny.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            (path / f.name).write_bytes(f.read_bytes())
    print(f"built {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B-parameter model in {time.time() - t0:.0f} s",
          flush=True)
    del model
    torch.cuda.empty_cache()


class GpuMemoryPoller(threading.Thread):
    """Peak GPU memory used, from nvidia-smi every 0.5 s (the trainer runs in another process)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak_mib = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            if not shutil.which("nvidia-smi"):
                return
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True).stdout.split()
            if out:
                self.peak_mib = max(self.peak_mib, int(out[0]))
            time.sleep(0.5)


def run_case(name: str, model_dir: Path, work: Path, steps: int, merge: bool = False, **lora) -> dict:
    out = work / f"out-{name}"
    config = {
        "model": {"name": str(model_dir), "dtype": "auto"},
        "dataset": {"uri": str(REPO / "examples/data/chat_tiny.jsonl"), "format": "messages", "evalFraction": 0.05},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "targetModules": ["all-linear"], **lora},
        "training": {"maxSteps": steps, "batchSize": 8, "gradientAccumulationSteps": 1, "maxLength": 512,
                     "packing": True, "loggingSteps": 5, "evalSteps": steps},
        "checkpointing": {"everySteps": steps, "keepLast": 1},
        "output": {"uri": str(out), "mergeAdapter": merge},
    }
    cfg_path = work / f"config-{name}.json"
    cfg_path.write_text(json.dumps(config))
    env = {**os.environ, "LFT_CONFIG": str(cfg_path), "LFT_TERMINATION_LOG": str(work / f"term-{name}.json")}
    poller = GpuMemoryPoller()
    poller.start()
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "lft_trainer"], env=env, capture_output=True, text=True)
    wall = time.time() - t0
    poller.stop.set()
    poller.join()
    result = {"case": name, "exitCode": proc.returncode, "wallSeconds": round(wall, 1), "peakGpuMiB": poller.peak_mib}
    summary_path = out / "training_summary.json"
    if summary_path.exists():
        s = json.loads(summary_path.read_text())
        result.update(dtype=s.get("dtype"), device=s.get("device"), steps=s.get("steps"),
                      tokensPerSecond=s["metrics"].get("trainTokensPerSecond"),
                      trainRuntimeSeconds=s["metrics"].get("trainRuntimeSeconds"),
                      trainable=s.get("trainableParameters"), total=s.get("totalParameters"),
                      adapterFiles=sorted(f["name"] for f in s.get("files", [])),
                      mergedUri=s.get("mergedUri"),
                      mergedFiles=sorted(p.name for p in (out / "merged").iterdir()) if (out / "merged").is_dir() else None)
    else:
        result["stderrTail"] = proc.stderr[-3000:]
        result["stdoutTail"] = proc.stdout[-1500:]
    print(json.dumps(result), flush=True)
    return result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="/tmp/lft-gpu")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--cases", default="bf16-lora,qlora-4bit",
                    help="comma list of: bf16-lora, qlora-4bit, lora-8bit, qlora-4bit-merged")
    ap.add_argument("--small", action="store_true", help="CPU smoke test of this script: a 2-layer model, LoRA only")
    args = ap.parse_args()
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"torch {torch.__version__}, {device}", flush=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model_dir = work / "phi3-mini-random"
    build_model(model_dir, args.small)
    cases = {
        "bf16-lora": {},
        "qlora-4bit": {"quantization": "4bit"},
        "lora-8bit": {"quantization": "8bit"},
        "qlora-4bit-merged": {"quantization": "4bit", "merge": True},
    }
    wanted = ["bf16-lora"] if args.small else args.cases.split(",")
    results = [run_case(name, model_dir, work, args.steps, **cases[name]) for name in wanted]
    Path(args.out, "gpu_phi3.json").write_text(json.dumps(results, indent=1))
    return 0 if all(r["exitCode"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
