"""Did it help? evaluation.samples held-out prompts, completed by the base model and by the tuned one.

After training (rank 0, in publish), the first N rows of the eval split (without one: the last N train rows,
which were trained on; the summary says "heldOut": false) are split into a prompt and a reference:
- messages: the turns before the last assistant turn, rendered with the chat template and the generation
  prompt; the reference is that assistant turn's content;
- prompt-completion: the prompt as it is; the reference is the completion;
- text: the first half of the text's tokens; the reference is the rest.
Each prompt is completed greedily (at most evaluation.maxNewTokens tokens) with the adapter disabled (the base
model: exact, also for a resumed run; lora.init pissa/olora: the initial adapter active, as the base weights are
residual) and enabled (the tuned model). The rows go to <output>/samples.jsonl and, shortened, to the summary.
A generation error or the time budget ends the sampling, never the run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager

from lft_api import contract
from lft_api.contract import Artifacts

from ..model import conversion
from ..storage.retry import describe
from ..storage.store import Storage

log = logging.getLogger(__name__)

BUDGET_SECONDS = 600.0  # all the generations of a run; prompts left after it are not sampled
SUMMARY_TEXT_CHARS = 500  # each text in the summary's copy of the rows is cut to this length


@dataclass(frozen=True)
class Prompt:
    prompt: str  # the text the model continues (chat template applied for messages rows)
    reference: str  # what the dataset says comes next
    add_special_tokens: bool  # False when the chat template already added them


@dataclass
class Sampled:
    artifacts: Artifacts = field(default_factory=Artifacts)
    summary: dict[str, Any] | None = None  # the summary's "samples" block; None when disabled


# ---------------------------------------------------------------------------------------------
# which rows, and how they split (pure)
# ---------------------------------------------------------------------------------------------
def pick_rows(eval_rows: Sequence[dict] | None, train_rows: Sequence[dict], n: int) -> tuple[list[dict], bool]:
    """(rows, held out): the first n eval rows; without eval rows, the last n train rows (not held out)."""
    if n <= 0:
        return [], eval_rows is not None and len(eval_rows) > 0
    if eval_rows is not None and len(eval_rows) > 0:
        return [eval_rows[i] for i in range(min(n, len(eval_rows)))], True
    return [train_rows[i] for i in range(max(0, len(train_rows) - n), len(train_rows))], False


def split_messages(messages: list[dict]) -> tuple[list[dict], str]:
    """(the turns before the last assistant turn, that turn's content)."""
    last = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
    return messages[:last], messages[last].get("content") or ""


def split_text(text: str, tokenizer) -> tuple[str, str]:
    """(the first half of the text's tokens, the rest), decoded."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    half = max(1, len(ids) // 2)
    return tokenizer.decode(ids[:half]), tokenizer.decode(ids[half:])


def to_prompt(row: dict, tokenizer) -> Prompt:
    """row: a normalized row (formats.normalize); its format from its keys."""
    if "messages" in row or isinstance(row.get("prompt"), list):
        if "messages" in row:
            turns, reference = split_messages(row["messages"])
        else:
            turns, reference = row["prompt"], split_messages(row["completion"])[1]
        text = tokenizer.apply_chat_template(turns, tools=row.get("tools"), tokenize=False, add_generation_prompt=True)
        return Prompt(text, reference, add_special_tokens=False)
    if "prompt" in row:
        return Prompt(row["prompt"], row["completion"], add_special_tokens=True)
    prompt, reference = split_text(row["text"], tokenizer)
    return Prompt(prompt, reference, add_special_tokens=True)


def shortened(row: dict[str, Any], limit: int = SUMMARY_TEXT_CHARS) -> dict[str, Any]:
    return {k: (v[:limit] + " [truncated]" if isinstance(v, str) and len(v) > limit else v) for k, v in row.items()}


# ---------------------------------------------------------------------------------------------
# generation
# ---------------------------------------------------------------------------------------------
def generate(model, tokenizer, prompt: Prompt, max_new_tokens: int) -> str:
    """The greedy completion of one prompt (the model in eval mode, with its KV cache)."""
    import torch

    enc = tokenizer(prompt.prompt, return_tensors="pt", add_special_tokens=prompt.add_special_tokens)
    enc = {k: v.to(model.device) for k, v in enc.items()}
    with torch.no_grad():
        ids = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens, use_cache=True,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def complete_all(model, tokenizer, prompts: list[Prompt], max_new_tokens: int,
                 clock: Callable[[], float] = time.monotonic,
                 as_base: Callable[[], ContextManager[Any]] | None = None) -> tuple[list[dict[str, str]], str | None]:
    """(one row per prompt completed, why sampling stopped early or None). Base: within as_base() (default: the
    adapter disabled; lora.init pissa/olora: conversion.as_base, the base weights being residual)."""
    as_base = as_base or model.disable_adapter
    rows: list[dict[str, str]] = []
    start, was_training = clock(), model.training
    model.eval()
    try:
        for p in prompts:
            if clock() - start > BUDGET_SECONDS:
                return rows, f"time budget of {BUDGET_SECONDS:.0f} s used up after {len(rows)} prompt(s)"
            with as_base():
                base = generate(model, tokenizer, p, max_new_tokens)
            tuned = generate(model, tokenizer, p, max_new_tokens)
            rows.append({"prompt": p.prompt, "reference": p.reference, "baseOutput": base, "tunedOutput": tuned})
    except Exception as exc:  # e.g. out of memory: the trained adapter matters more than its samples
        log.warning("sampling stopped after %d prompt(s): %s", len(rows), describe(exc))
        return rows, f"generation failed: {describe(exc)}"[:300]
    finally:
        model.train(was_training)
    return rows, None


# ---------------------------------------------------------------------------------------------
# the step in publish
# ---------------------------------------------------------------------------------------------
def write_samples(prep, out: Storage) -> Sampled:
    """samples.jsonl under the output and the summary's block, for train.Prepared `prep` (rank 0).
    A storage failure raises StorageError (like the summary's)."""
    evaluation = prep.config.evaluation
    if evaluation.samples <= 0:
        return Sampled()
    started = time.monotonic()
    rows, held_out = pick_rows(prep.data.eval_rows, prep.data.train_rows, evaluation.samples)
    prompts = [to_prompt(json.loads(r["row"]), prep.tokenizer) for r in rows]
    initial = getattr(prep, "initial_adapter", None)
    as_base = (lambda: conversion.as_base(prep.model, initial)) if initial is not None else None
    done, stopped = complete_all(prep.model, prep.tokenizer, prompts, evaluation.max_new_tokens, as_base=as_base)
    seconds = round(time.monotonic() - started, 3)
    log.info("sampled %d held-out prompt(s) with the base and the tuned model in %.1f s", len(done), seconds)
    local = prep.work / "samples" / contract.SAMPLES_FILE
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in done))
    out.upload_file(Path(local), contract.SAMPLES_FILE)
    summary = {"heldOut": held_out, "count": len(done), "maxNewTokens": evaluation.max_new_tokens,
               "seconds": seconds, "rows": [shortened(r) for r in done]}
    if stopped:
        summary["stoppedEarly"] = stopped
    return Sampled(Artifacts(samples=out.uri(contract.SAMPLES_FILE)), summary)
