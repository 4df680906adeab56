"""Generate the function-calling and ShareGPT-shaped example datasets (deterministic: same bytes on every run).

    python examples/data/make_tools_tiny.py     # writes tools_tiny.jsonl and sharegpt_tiny.jsonl next to this file

tools_tiny.jsonl: messages rows with a `tools` list; the assistant calls get_capital or add (tool_calls, no
text), the tool answers, the assistant replies. Train it with a chat template that renders tools (e.g.
model.chatTemplate: qwen2_5). sharegpt_tiny.jsonl: the chat examples as {"conversations": [{"from": "human",
"value": ...}, {"from": "gpt", "value": ...}]} (dataset.columns.preset: sharegpt).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from make_chat_tiny import CAPITALS, make_rows

TOOLS = [
    {"type": "function", "function": {
        "name": "get_capital", "description": "The capital city of a country.",
        "parameters": {"type": "object", "properties": {"country": {"type": "string"}}, "required": ["country"]}}},
    {"type": "function", "function": {
        "name": "add", "description": "The sum of two integers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                       "required": ["a", "b"]}}},
]


def _call(name: str, arguments: dict) -> dict:
    return {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": name, "arguments": arguments}}]}


def make_tool_rows(n: int, seed: int = 11) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        if i % 2 == 0:
            country = rng.choice(sorted(CAPITALS))
            turns = [{"role": "user", "content": f"Look up the capital of {country}."},
                     _call("get_capital", {"country": country}),
                     {"role": "tool", "content": CAPITALS[country]},
                     {"role": "assistant", "content": f"The capital of {country} is {CAPITALS[country]}."}]
        else:
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            turns = [{"role": "user", "content": f"Use the calculator: {a} + {b}?"},
                     _call("add", {"a": a, "b": b}),
                     {"role": "tool", "content": str(a + b)},
                     {"role": "assistant", "content": f"{a} + {b} = {a + b}."}]
        rows.append({"messages": turns, "tools": TOOLS})
    return rows


def to_sharegpt(row: dict) -> dict:
    names = {"user": "human", "assistant": "gpt", "system": "system"}
    return {"conversations": [{"from": names[m["role"]], "value": m["content"]} for m in row["messages"]]}


def main() -> None:
    here = Path(__file__).parent
    (here / "tools_tiny.jsonl").write_text("".join(json.dumps(r) + "\n" for r in make_tool_rows(120)))
    (here / "sharegpt_tiny.jsonl").write_text("".join(json.dumps(to_sharegpt(r)) + "\n" for r in make_rows(120, 5)))


if __name__ == "__main__":
    main()
