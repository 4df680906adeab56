"""Pre-flight on a 1-million-row JSON Lines file: every row checked and written for training, in bounded memory.

    .venv/bin/python bench/preflight_1m.py [--rows 1000000] [--keep DIR] [--json out.json]

Writes a chat dataset of --rows rows (the example rows repeated with varied text; a quarter with a tool call,
a tool turn and a tools list) and runs the trainer's pre-flight dataset check (preflight.check_dataset: parse,
check, normalize, write the Arrow file training reads) on it in a fresh process; prints the seconds and the
peak RSS of that process (ru_maxrss), and of a second one that only imports the modules, so the difference
is what the rows cost. Nothing is sampled: every row is checked.

Measured on the project's 2-core CPU machine (shared with other helpers, load ~1.5), 2026-12-01:
  preflight: 1000000 rows in 20.8 s, peak RSS 167 MiB (imports alone 34 MiB), file 244.7 MiB, nothing sampled
  (the Arrow file of normalized rows that training reads: 274 MiB on disk, memory-mapped).
The next stage, rendering every row with the chat template and tokenizing it (rendering.py, trainset.py: after
the tokenizer loads, before the model does; TRL rendered every row itself before), is not part of this figure:
on the same machine it took 22.8 s for 20,000 of these rows with the qwen2_5 template and the tiny tokenizer
(about 1.1 ms a row in one process, so about 19 minutes for the million), peak RSS 381 MiB.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLS = [{"type": "function", "function": {"name": "get_capital", "description": "The capital of a country.",
                                           "parameters": {"type": "object", "properties": {"country": {"type": "string"}}}}}]


def write_dataset(path: Path, rows: int, seed: int = 3) -> None:
    rng = random.Random(seed)
    base = [json.loads(x) for x in (ROOT / "examples/data/chat_tiny.jsonl").read_text().splitlines()]
    with open(path, "w") as f:
        for i in range(rows):
            if i % 4 == 3:
                c = f"Country{rng.randint(0, 999)}"
                row = {"messages": [
                    {"role": "user", "content": f"Look up the capital of {c}."},
                    {"role": "assistant", "tool_calls": [{"type": "function", "function": {
                        "name": "get_capital", "arguments": {"country": c}}}]},
                    {"role": "tool", "content": f"{c} City"},
                    {"role": "assistant", "content": f"The capital of {c} is {c} City."}], "tools": TOOLS}
            else:
                row = base[i % len(base)]
                row = {"messages": [*row["messages"][:-1], {"role": "assistant",
                                                            "content": row["messages"][-1]["content"] + f" ({i})"}]}
            f.write(json.dumps(row) + "\n")


CHILD = """
import json, resource, sys, time
from pathlib import Path
t0 = time.monotonic()
from lft_api.spec import DatasetSpec
from lft_trainer.data import sources as data
from lft_trainer.run import preflight
imported = time.monotonic() - t0
if sys.argv[1] == "import-only":
    print(json.dumps({"rssMiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    sys.exit(0)
spec = DatasetSpec(uri=sys.argv[1], evalFraction=0.01)
t1 = time.monotonic()
report = preflight.check_dataset(data.resolve(spec, None, Path(sys.argv[2])), spec, Path(sys.argv[2]) / "rows")
seconds = time.monotonic() - t1
rows = data.open_rows(report.splits["train"].path)
print(json.dumps({"seconds": round(seconds, 1), "importSeconds": round(imported, 1),
                  "rssMiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "checked": report.splits["train"].checked, "written": len(rows),
                  "formats": report.formats, "rowsBytes": report.splits["train"].path.stat().st_size}))
"""


def run_child(*args: str) -> dict:
    env = {"PYTHONPATH": f"{ROOT}/api:{ROOT}/trainer_image", "PATH": "/usr/bin:/bin", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--keep", type=Path, default=None, help="work directory to keep (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="lft-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / "train.jsonl"
    t = time.monotonic()
    write_dataset(path, args.rows)
    print(f"wrote {args.rows} rows, {path.stat().st_size / 2**20:.0f} MiB, in {time.monotonic() - t:.0f} s")
    baseline = run_child("import-only")
    result = {**run_child(str(path), str(work)), "fileMiB": round(path.stat().st_size / 2**20, 1),
              "importOnlyRssMiB": baseline["rssMiB"]}
    print(json.dumps(result))
    print(f"preflight: {result['checked']} rows in {result['seconds']} s, peak RSS {result['rssMiB']:.0f} MiB "
          f"(imports alone {baseline['rssMiB']:.0f} MiB), file {result['fileMiB']} MiB, nothing sampled")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
