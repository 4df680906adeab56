"""metrics.jsonl: the run's history, one row per logged step, built from the HF TrainerState's log_history.

Pure. Each row has every field (null when the step did not log it):
step, epoch, loss, learningRate, gradNorm, tokensSeen, evalLoss. An evaluation is merged into the row of
its step; the eval loss before step 1 (not in log_history: train() starts a fresh one) is row 0.
"""

from __future__ import annotations

import json
import math
from typing import Any

FIELDS = ("step", "epoch", "loss", "learningRate", "gradNorm", "tokensSeen", "evalLoss")
# HF log key -> row field (step is the entry's own "step").
_KEYS = {"epoch": "epoch", "loss": "loss", "learning_rate": "learningRate", "grad_norm": "gradNorm",
         "num_input_tokens_seen": "tokensSeen", "eval_loss": "evalLoss"}
_METRICS = ("loss", "learning_rate", "grad_norm", "eval_loss")  # an entry without any is not a logged step


def _number(v: Any) -> float | None:
    """A finite float, or None (NaN and infinities are not JSON)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _row(step: int) -> dict[str, Any]:
    return {name: None for name in FIELDS} | {"step": step}


def _merge(row: dict[str, Any], entry: dict[str, Any]) -> None:
    for key, name in _KEYS.items():
        if key not in entry:
            continue
        value = _number(entry[key])
        if name == "tokensSeen" and value is not None:
            value = int(value)
        if value is not None or name in ("loss", "evalLoss"):  # a NaN loss shows as null, not as an older value
            row[name] = value


def metrics_rows(log_history: list[dict[str, Any]], eval_before: float | None = None,
                 eval_after: float | None = None, last_step: int | None = None) -> list[dict[str, Any]]:
    """One row per logged step, by step. eval_before is the step-0 eval loss; eval_after, the eval loss at
    last_step (when log_history does not have it already)."""
    rows: dict[int, dict[str, Any]] = {}
    if _number(eval_before) is not None:
        rows[0] = _row(0) | {"evalLoss": float(eval_before), "epoch": 0.0, "tokensSeen": 0}
    for entry in log_history:
        step = entry.get("step")
        if not isinstance(step, int) or not any(k in entry for k in _METRICS):
            continue  # e.g. the train() summary entry (train_runtime, train_loss)
        _merge(rows.setdefault(step, _row(step)), entry)
    if last_step is not None and _number(eval_after) is not None:
        row = rows.setdefault(last_step, _row(last_step))
        if row["evalLoss"] is None:
            row["evalLoss"] = float(eval_after)
    return [rows[s] for s in sorted(rows)]


def to_jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows).encode()


def perplexity(eval_loss: float | None) -> float | None:
    """exp(eval loss): None without a loss, or when it overflows a float (or is not finite)."""
    loss = _number(eval_loss)
    if loss is None:
        return None
    try:
        value = math.exp(loss)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def eval_loss_change(before: float | None, after: float | None) -> float | None:
    """after - before (negative: the fine-tune lowered the eval loss); None unless both are known."""
    before, after = _number(before), _number(after)
    return None if before is None or after is None else after - before
