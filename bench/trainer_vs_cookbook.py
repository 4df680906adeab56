"""Our trainer's defaults vs. the Phi-3 cookbook's sample_finetune.py recipe, same tiny model, same data.

    .venv/bin/python bench/trainer_vs_cookbook.py [--epochs 3] [--repeats 1] [--json out.json]

(a) ours: `lft_trainer.run.train.run` with a config that sets only the model, dataset and output (every
    training/LoRA setting is the spec default), plus `--epochs` for both sides.
(b) cookbook: microsoft/Phi-3-mini-4k-instruct's sample_finetune.py training_config/peft_config, adapted
    only where current TRL/transformers renamed arguments: max_seq_length -> SFTConfig.max_length,
    tokenizer -> processing_class, dataset_text_field/packing -> SFTConfig, warmup_ratio -> warmup_steps
    (a float < 1 is a ratio), overwrite_output_dir and log_level dropped (removed / cosmetic); bf16 -> fp32
    on CPU and flash_attention_2 -> the default attention (no CUDA here).
Both sides count non-padding tokens (include_num_input_tokens_seen="non_padding", measurement only).

Each variant runs in its own process (peak RSS is per process). Tokens/s = non-padding training tokens /
train_runtime; tokens/cpu-s = the same tokens / CPU seconds of the process inside Trainer.train (steadier
on a machine shared with other jobs). The final eval loss is measured the same way for both (mean token loss of base + adapter
over the same held-out rows, one row at a time), so packing or batching cannot flatter either side.

Measured on the project's 2-core CPU machine (shared with other jobs; 3 epochs, 1 thread, 2026-11-27):
  cookbook  ~1.2k tokens/s (1.8k tokens/cpu-s), peak RSS ~1000 MiB, eval loss 7.364 (6 steps)
  ours      ~3.3-4.5k tokens/s (7.5-8.3k tokens/cpu-s), peak RSS ~565 MiB, eval loss 6.312 (87 steps)
  -> 3.8-4.1x tokens/s, 4.5x tokens/cpu-s, lower eval loss.
--ablations attributes it: the recipe without gradient checkpointing reaches 2.5k tokens/cpu-s, without
packing too 9.2k (its eval loss stays 7.31 at lr 5e-6). On CPU (no varlen flash-attention kernel) the
recipe's padding-free packing attends over 4 x 2048 flattened tokens with a block-diagonal mask, which is
quadratic work that short chat rows never need; checkpointing recomputes every forward. The loss gap is
the learning rate (2e-4 vs 5e-6).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "api"), str(REPO / "trainer_image")]
DATASET = REPO / "examples/data/chat_tiny.jsonl"
EVAL_FRACTION = 0.05

COOKBOOK_TRAINING_CONFIG = {
    "bf16": True,  # -> False on CPU (fp32)
    "do_eval": False,
    "learning_rate": 5.0e-06,
    "log_level": "info",
    "logging_steps": 20,
    "logging_strategy": "steps",
    "lr_scheduler_type": "cosine",
    "num_train_epochs": 1,
    "max_steps": -1,
    "output_dir": "./checkpoint_dir",
    "overwrite_output_dir": True,
    "per_device_eval_batch_size": 4,
    "per_device_train_batch_size": 4,
    "remove_unused_columns": True,
    "save_steps": 100,
    "save_total_limit": 1,
    "seed": 0,
    "gradient_checkpointing": True,
    "gradient_checkpointing_kwargs": {"use_reentrant": False},
    "gradient_accumulation_steps": 1,
    "warmup_ratio": 0.2,
}
COOKBOOK_PEFT_CONFIG = {
    "r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "bias": "none", "task_type": "CAUSAL_LM",
    "target_modules": "all-linear", "modules_to_save": None,
}


def split_data(work: Path) -> Path:
    """train.jsonl + eval.jsonl (seeded split), used by both variants."""
    rows = DATASET.read_text().splitlines()
    rng = random.Random(0)
    idx = list(range(len(rows)))
    rng.shuffle(idx)
    n_eval = max(1, round(len(rows) * EVAL_FRACTION))
    d = work / "data"
    d.mkdir(parents=True, exist_ok=True)
    (d / "eval.jsonl").write_text("\n".join(rows[i] for i in sorted(idx[:n_eval])) + "\n")
    (d / "train.jsonl").write_text("\n".join(rows[i] for i in sorted(idx[n_eval:])) + "\n")
    return d


def common_eval_loss(model_dir: Path, adapter_dir: Path, eval_file: Path) -> float:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), str(adapter_dir)).eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for line in eval_file.read_text().splitlines():
            text = tok.apply_chat_template(json.loads(line)["messages"], tokenize=False)
            ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
            out = model(ids, labels=ids)
            k = ids.shape[1] - 1
            total += out.loss.item() * k
            n += k
    return total / n


def run_ours(model_dir: Path, data_dir: Path, work: Path, epochs: float) -> dict:
    from lft_api.spec import TrainerConfig
    from lft_trainer.reporting.progress import Reporter
    from lft_trainer.run import train
    from lft_trainer.settings import Settings

    out = work / "ours-out"
    config = TrainerConfig.model_validate({
        "model": {"name": str(model_dir)},
        "dataset": {"uri": str(data_dir), "evalSplit": "eval"},
        "training": {"epochs": epochs},
        "output": {"uri": f"file://{out}"},
    })
    msg = train.run(config, reporter=Reporter([]), settings=Settings(work_dir=str(work / "ours-work")))
    assert msg.outcome == "succeeded", msg
    summary = json.loads((out / "training_summary.json").read_text())
    runtime = summary["metrics"]["trainRuntimeSeconds"]
    return {"tokens": summary["tokensSeen"], "train_seconds": runtime, "steps": summary["steps"],
            "adapter": str(out / "adapter"), "settings": config.training.model_dump(mode="json")}


def run_cookbook(model_dir: Path, data_dir: Path, work: Path, epochs: float, ablate: str = "") -> dict:
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    cuda = torch.cuda.is_available()
    conf = dict(COOKBOOK_TRAINING_CONFIG)
    conf["bf16"] = conf["bf16"] and cuda
    conf["warmup_steps"] = conf.pop("warmup_ratio")  # renamed: a float < 1 is a ratio
    conf.pop("overwrite_output_dir")  # removed from transformers
    conf.pop("log_level")  # cosmetic
    conf["num_train_epochs"] = epochs
    conf["output_dir"] = str(work / "cookbook-out")
    conf.update(max_length=2048, dataset_text_field="text", packing=True)  # were SFTTrainer arguments
    conf.update(report_to=[], disable_tqdm=True, include_num_input_tokens_seen="non_padding", use_cpu=not cuda)
    # Ablations (--ablations): which of our differences buys what. Not part of the comparison proper.
    if ablate == "no-gc":
        conf["gradient_checkpointing"] = False
    elif ablate == "no-gc-no-packing":
        conf.update(gradient_checkpointing=False, packing=False)
    train_conf = SFTConfig(**conf)
    peft_conf = LoraConfig(**COOKBOOK_PEFT_CONFIG)

    model = AutoModelForCausalLM.from_pretrained(
        model_dir, use_cache=False, trust_remote_code=True,
        dtype=torch.bfloat16 if cuda else torch.float32, device_map=None)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.model_max_length = 2048
    tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token  # the tiny tokenizer has no unk
    tokenizer.pad_token_id = tokenizer.convert_tokens_to_ids(tokenizer.pad_token)
    tokenizer.padding_side = "right"

    def apply_chat_template(example, tokenizer):
        example["text"] = tokenizer.apply_chat_template(example["messages"], tokenize=False,
                                                        add_generation_prompt=False)
        return example

    raw = datasets.load_dataset("json", data_files={"train": str(data_dir / "train.jsonl"),
                                                    "test": str(data_dir / "eval.jsonl")})
    cols = raw["train"].column_names
    processed_train = raw["train"].map(apply_chat_template, fn_kwargs={"tokenizer": tokenizer}, remove_columns=cols)
    processed_test = raw["test"].map(apply_chat_template, fn_kwargs={"tokenizer": tokenizer}, remove_columns=cols)
    trainer = SFTTrainer(model=model, args=train_conf, peft_config=peft_conf, train_dataset=processed_train,
                         eval_dataset=processed_test, processing_class=tokenizer)
    result = trainer.train()
    adapter = work / "cookbook-adapter"
    trainer.save_model(str(adapter))
    return {"tokens": int(trainer.state.num_input_tokens_seen), "train_seconds": result.metrics["train_runtime"],
            "steps": trainer.state.global_step, "adapter": str(adapter)}


def _time_train_calls(clock: dict) -> None:
    """Wall and process CPU seconds spent inside Trainer.train (both variants go through it)."""
    import transformers

    original = transformers.Trainer.train

    def timed(self, *a, **kw):
        w, c = time.monotonic(), time.process_time()
        try:
            return original(self, *a, **kw)
        finally:
            clock["wall"] = clock.get("wall", 0.0) + time.monotonic() - w
            clock["cpu"] = clock.get("cpu", 0.0) + time.process_time() - c

    transformers.Trainer.train = timed


def child(args) -> None:
    work = Path(args.work)
    t0 = time.monotonic()
    clock: dict = {}
    _time_train_calls(clock)
    if args.variant == "ours":
        res = run_ours(Path(args.model), Path(args.data), work, args.epochs)
    else:
        ablate = args.variant.removeprefix("cookbook").lstrip("-")
        res = run_cookbook(Path(args.model), Path(args.data), work, args.epochs, ablate)
    res["eval_loss"] = common_eval_loss(Path(args.model), Path(res["adapter"]), Path(args.data) / "eval.jsonl")
    res["tokens_per_second"] = res["tokens"] / res["train_seconds"]
    # Tokens per CPU-second of the training process: steadier than wall time on a shared machine.
    res["tokens_per_cpu_second"] = res["tokens"] / clock["cpu"]
    res["train_cpu_seconds"] = clock["cpu"]
    res["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["wall_seconds"] = time.monotonic() - t0
    Path(args.json_out).write_text(json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 3, not the recipe's 1: one epoch of the packed recipe is only 2 optimizer steps on this data.
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=1)
    # One intra-op thread for both sides by default: on a small shared machine, OpenMP threads spin at
    # barriers while descheduled, which punishes small kernels and makes timings swing run to run.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--ablations", action="store_true",
                    help="also run the cookbook recipe without gradient checkpointing, and without packing too")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--json-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        child(args)
        return

    from lft_trainer.model import tiny_model

    work = Path(tempfile.mkdtemp(prefix="lft-bench-"))
    model_dir = tiny_model.build(work / "tiny", DATASET)
    data_dir = split_data(work)
    variants = ["cookbook", "ours"] + (["cookbook-no-gc", "cookbook-no-gc-no-packing"] if args.ablations else [])
    results: dict[str, list[dict]] = {v: [] for v in variants}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "api"), str(REPO / "trainer_image"), os.environ.get("PYTHONPATH", "")]),
           "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
           "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    for i in range(args.repeats):
        for variant in variants:  # alternate, so drifting machine load hits both
            vwork = work / f"{variant}-{i}"
            vwork.mkdir()
            out = vwork / "result.json"
            cmd = [sys.executable, __file__, "--variant", variant, "--work", str(vwork), "--model", str(model_dir),
                   "--data", str(data_dir), "--epochs", str(args.epochs), "--json-out", str(out)]
            proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr[-5000:])
                raise SystemExit(f"{variant} failed with exit code {proc.returncode}")
            results[variant].append(json.loads(out.read_text()))
            r = results[variant][-1]
            print(f"[{i + 1}/{args.repeats}] {variant:26s} tokens/s {r['tokens_per_second']:9.0f}  "
                  f"tokens/cpu-s {r['tokens_per_cpu_second']:7.0f}  "
                  f"peak RSS {r['peak_rss_mib']:6.0f} MiB  eval loss {r['eval_loss']:.4f}  steps {r['steps']}  "
                  f"train {r['train_seconds']:.1f}s", flush=True)

    def med(variant: str, key: str) -> float:
        return statistics.median(r[key] for r in results[variant])

    report = {v: {k: med(v, k) for k in ("tokens_per_second", "tokens_per_cpu_second", "peak_rss_mib", "eval_loss",
                                                 "train_seconds", "tokens")}
              for v in results}
    report["ratio_tokens_per_second"] = report["ours"]["tokens_per_second"] / report["cookbook"]["tokens_per_second"]
    report["ratio_tokens_per_cpu_second"] = (report["ours"]["tokens_per_cpu_second"]
                                             / report["cookbook"]["tokens_per_cpu_second"])
    report["ours_eval_loss_not_worse"] = report["ours"]["eval_loss"] <= report["cookbook"]["eval_loss"]
    report["epochs"] = args.epochs
    report["threads"] = args.threads
    report["repeats"] = args.repeats
    print()
    print(f"{'':26s}{'tokens/s':>12s}{'tokens/cpu-s':>14s}{'peak RSS MiB':>14s}{'eval loss':>11s}{'train s':>9s}")
    for v in variants:
        r = report[v]
        print(f"{v:26s}{r['tokens_per_second']:12.0f}{r['tokens_per_cpu_second']:14.0f}{r['peak_rss_mib']:14.0f}"
              f"{r['eval_loss']:11.4f}{r['train_seconds']:9.1f}")
    print(f"ratio (ours / cookbook) tokens/s: {report['ratio_tokens_per_second']:.2f}x, "
          f"tokens/cpu-s: {report['ratio_tokens_per_cpu_second']:.2f}x; "
          f"eval loss ours {'<=' if report['ours_eval_loss_not_worse'] else '>'} cookbook")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "report": report}, indent=2))


if __name__ == "__main__":
    main()
