"""Tokens/s of 1 pod x 1 process vs 2 pods x 1 process (CPU, gloo), tiny model, same data and steps.

    .venv/bin/python bench/multinode_scaling.py [--steps 40] [--threads 1] [--json out.json]

Each "pod" is a `python -m lft_trainer` process with the environment the operator gives a pod
(LFT_NODE_RANK, LFT_MASTER_ADDR=127.0.0.1, LFT_MASTER_PORT), its own work dir, and the trainer
config of a resource with training.nodes 1 or 2: the trainer's own launch path (pre-flight once per pod,
then torchrun with a static rendezvous) on loopback, no Kubernetes. Output goes to file://.

Tokens/s = the summary's trainTokensPerSecond (non-padding tokens of every rank / train runtime,
reported by rank 0). The per-rank batch is the same in both cases, so 2 pods take twice the global batch
per step: weak scaling, the usual DDP setting. The ratio is 2-pod tokens/s over 1-pod tokens/s; on a
machine with 2 cores shared with other jobs the two "pods" compete for the same cores and the gloo
all-reduce goes through loopback, so a ratio below 2 (even below 1) says little about real nodes.

Measured on the project's 2-core CPU machine, shared with other jobs (load average 2.4-2.8), 2026-12-01:
  300 steps: 1 pod x 1 process 8962 tokens/s, 2 pods x 1 process 11812 tokens/s -> ratio 1.32
             (eval loss 7.322 -> 1.004 and -> 1.029; results/multinode_scaling-cpu2.json)
  60 steps (2-4 s of training, noisy): ratios 1.31 and 0.85.
Each process has one thread (--threads 1), so the 2-pod case uses both cores where the 1-pod case uses one:
the ratio is bounded by 2 and says nothing about network-bound scaling across real nodes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "api"), str(ROOT / "trainer_image")]

DATASET = ROOT / "examples/data/chat_tiny.jsonl"


def _config(model: Path, out: str, nodes: int, steps: int) -> dict:
    from lft_api.spec import TrainerConfig

    return TrainerConfig.model_validate({
        "model": {"name": str(model)}, "dataset": {"uri": str(DATASET), "evalFraction": 0.1},
        "training": {"maxSteps": steps, "learningRate": 3e-3, "batchSize": 8, "gradientAccumulationSteps": 1,
                     "maxLength": 128, "loggingSteps": 5, "evalSteps": steps, "nodes": nodes, "numProcesses": 1},
        "checkpointing": {"everySteps": steps, "keepLast": 1}, "output": {"uri": out},
    }).to_wire()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_case(model: Path, nodes: int, steps: int, threads: int, tmp: Path) -> dict:
    out = tmp / f"out-{nodes}"
    cfg_path = tmp / f"config-{nodes}.json"
    cfg_path.write_text(json.dumps(_config(model, f"file://{out}", nodes, steps)))
    port = str(_port())
    procs = []
    start = time.monotonic()
    for rank in range(nodes):
        env = {**os.environ, "LFT_NODE_RANK": str(rank), "LFT_MASTER_ADDR": "127.0.0.1", "LFT_MASTER_PORT": port,
               "LFT_WORK_DIR": str(tmp / f"work-{nodes}-{rank}"), "LFT_TERMINATION_LOG": str(tmp / f"term-{nodes}-{rank}"),
               "OMP_NUM_THREADS": str(threads), "PYTHONPATH": f"{ROOT / 'api'}{os.pathsep}{ROOT / 'trainer_image'}"}
        for var in ("LFT_NAME", "LFT_NAMESPACE", "LFT_UID"):
            env.pop(var, None)
        procs.append(subprocess.Popen([sys.executable, "-m", "lft_trainer", "--config", str(cfg_path)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=open(tmp / f"log-{nodes}-{rank}", "w")))
    codes = [p.wait(timeout=1800) for p in procs]
    wall = time.monotonic() - start
    if any(codes):
        raise SystemExit(f"nodes={nodes}: exit codes {codes}; logs in {tmp}")
    summary = json.loads((out / "training_summary.json").read_text())
    m = summary["metrics"]
    return {"nodes": nodes, "processesPerNode": summary["processesPerNode"], "worldSize": summary["worldSize"],
            "steps": summary["steps"], "tokensSeen": summary["tokensSeen"], "trainRuntime": m["trainRuntimeSeconds"],
            "tokensPerSecond": summary["tokensSeen"] / m["trainRuntimeSeconds"],
            "evalLossBefore": m["evalLossBefore"], "evalLossAfter": m["evalLossAfter"], "wallSeconds": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="OMP threads per process")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from lft_trainer.model import tiny_model

    with tempfile.TemporaryDirectory(prefix="lft-bench-mn-") as d:
        tmp = Path(d)
        model = tiny_model.build(tmp / "model", DATASET)
        one = run_case(model, 1, args.steps, args.threads, tmp)
        two = run_case(model, 2, args.steps, args.threads, tmp)
    ratio = two["tokensPerSecond"] / one["tokensPerSecond"]
    result = {"cpuCount": os.cpu_count(), "threadsPerProcess": args.threads, "oneByOne": one, "twoByOne": two,
              "scalingRatio": round(ratio, 3)}
    for case in (one, two):
        print(f"{case['nodes']} pod(s) x {case['processesPerNode']} process: {case['tokensPerSecond']:.0f} tokens/s "
              f"({case['tokensSeen']} tokens in {case['trainRuntime']:.1f} s, {case['steps']} steps), "
              f"eval loss {case['evalLossBefore']:.3f} -> {case['evalLossAfter']:.3f}")
    print(f"scaling ratio (2 pods / 1 pod tokens/s): {ratio:.2f} on {os.cpu_count()} CPU core(s)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
