"""Generate the example chat dataset (deterministic: same bytes on every run).

    python examples/data/make_chat_tiny.py            # writes chat_tiny.jsonl and bad_rows.jsonl next to this file

The tasks are tiny, fixed mappings (capitals from a small table, sums of one-digit numbers, reversing
three words from a small vocabulary) phrased in fixed templates, so that the tiny random model in
the CPU image visibly learns them in a few hundred steps: a test can demand that eval loss drops.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

CAPITALS = {
    "France": "Paris", "Spain": "Madrid", "Italy": "Rome", "Germany": "Berlin", "Japan": "Tokyo",
    "Egypt": "Cairo", "Peru": "Lima", "Kenya": "Nairobi", "Chile": "Santiago", "Norway": "Oslo",
    "Greece": "Athens", "Cuba": "Havana", "Ireland": "Dublin", "Poland": "Warsaw", "Austria": "Vienna",
    "Portugal": "Lisbon",
}
WORDS = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree", "fish", "bird", "star", "rock"]
SYSTEM = "You are a concise assistant."


def _capital(rng: random.Random) -> tuple[str, str]:
    country = rng.choice(sorted(CAPITALS))
    return f"What is the capital of {country}?", f"The capital of {country} is {CAPITALS[country]}."


def _sum(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    return f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."


def _reverse(rng: random.Random) -> tuple[str, str]:
    words = rng.sample(WORDS, 3)
    return "Reverse these words: " + " ".join(words), " ".join(reversed(words))


TASKS = (_capital, _sum, _reverse)


def make_rows(n: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        question, answer = TASKS[i % len(TASKS)](rng)
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        if rng.random() < 0.25:
            messages.insert(0, {"role": "system", "content": SYSTEM})
        rows.append({"messages": messages})
    return rows


def make_bad_rows(seed: int = 7) -> list[str]:
    """Lines of a JSONL file whose row 17 (1-based) has an unknown role: the pre-flight demo/e2e input."""
    lines = [json.dumps(r) for r in make_rows(20, seed)]
    bad = json.loads(lines[16])
    bad["messages"][-1]["role"] = "robot"
    lines[16] = json.dumps(bad)
    return lines


def main() -> None:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=480)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output-dir", type=Path, default=here)
    args = parser.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    with open(args.output_dir / "chat_tiny.jsonl", "w") as f:
        for row in make_rows(args.rows, args.seed):
            f.write(json.dumps(row) + "\n")
    (args.output_dir / "bad_rows.jsonl").write_text("\n".join(make_bad_rows(args.seed)) + "\n")


if __name__ == "__main__":
    main()
