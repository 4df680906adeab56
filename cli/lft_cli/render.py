"""What `lft status` and `lft wait` print, and the exit code of a wait (pure: plain dicts in, text out)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lft_api.contract import Artifacts, Metrics, Progress
from lft_operator.views import ATTEMPT_LABEL, NODE_RANK_LABEL

# Exit codes of every subcommand (wait: the run's outcome).
EXIT_OK = 0  # wait: Succeeded
EXIT_FAILED = 1  # wait: the run Failed; pull: a file does not match the adapter's sha256 manifest
EXIT_TIMEOUT = 2  # wait: --timeout passed first
EXIT_ERROR = 3  # the command could not run: bad arguments, no such resource, API or storage error

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def current_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The trainer pod `lft logs` shows: the newest attempt's, and of a multi-node attempt node 0's
    (rank 0 logs the progress and writes the result; the other nodes' pods may be newer)."""
    def order(pod: dict[str, Any]) -> tuple[int, bool, str, str]:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        attempt = str(labels.get(ATTEMPT_LABEL) or "0")
        return (int(attempt) if attempt.isdigit() else 0, labels.get(NODE_RANK_LABEL, "0") == "0",
                str(meta.get("creationTimestamp") or ""), str(meta.get("name") or ""))

    return max(pods, key=order, default=None)


def parse_duration(text: str) -> float:
    """Seconds in a kubectl-style duration: 90, 90s, 5m, 1h30m, 2m30s. ValueError otherwise."""
    m = _DURATION.match(text.strip())
    if not text.strip() or not m or not any(m.groups()):
        raise ValueError(f"invalid duration {text!r}: use e.g. 90s, 10m or 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in m.groups())
    return hours * 3600 + minutes * 60 + seconds


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}".rstrip("0").rstrip(".")


def progress_line(progress: Progress) -> str:
    """'120/300 (40%), epoch 1.2, ETA 3m20s, 2100 tokens/s' (what is known of it)."""
    parts = [progress.display or f"{progress.step}/{progress.total_steps}"]
    if progress.epoch is not None:
        parts.append(f"epoch {progress.epoch:g}")
    if progress.eta:
        parts.append(f"ETA {progress.eta}")
    if progress.tokens_per_second:
        parts.append(f"{progress.tokens_per_second:.0f} tokens/s")
    if progress.resumed_from_step:
        parts.append(f"resumed from step {progress.resumed_from_step}")
    return ", ".join(parts)


def _eval_line(metrics: Metrics) -> str | None:
    if metrics.eval_loss_before is None and metrics.eval_loss is None:
        return None
    change = metrics.eval_loss_change
    if change is None and metrics.eval_loss is not None and metrics.eval_loss_before is not None:
        change = round(metrics.eval_loss - metrics.eval_loss_before, 4)
    verdict = "" if change is None else f" (change {change:+.4f}: {'better' if change < 0 else 'not better'})"
    return f"{_num(metrics.eval_loss_before)} before -> {_num(metrics.eval_loss)} after{verdict}"


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def conditions_table(conditions: list[dict[str, Any]]) -> list[str]:
    """The conditions oldest first (by lastTransitionTime), the newest last: what happened most recently."""
    ordered = sorted(conditions, key=lambda c: c.get("lastTransitionTime") or "")
    rows = [["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"]]
    rows += [[c.get("type", ""), c.get("status", ""), c.get("reason", ""), c.get("lastTransitionTime", ""),
              " ".join(str(c.get("message") or "").split())] for c in ordered]
    return _table(rows)


def format_status(obj: dict[str, Any]) -> str:
    """`lft status NAME`: phase, progress, losses, eval before/after, artifacts, conditions."""
    meta, status = obj.get("metadata", {}), obj.get("status") or {}
    lines = [f"Name:        {meta.get('name')}", f"Namespace:   {meta.get('namespace')}",
             f"Phase:       {status.get('phase') or 'Pending (not reconciled yet)'}"]
    if status.get("message"):
        lines.append(f"Message:     {status['message']}")
    if status.get("progress"):
        lines.append(f"Progress:    {progress_line(Progress.model_validate(status['progress']))}")
    metrics = Metrics.model_validate(status.get("metrics") or {})
    if metrics.loss is not None:
        lines.append(f"Train loss:  {_num(metrics.loss)} (last logged)")
    if (evals := _eval_line(metrics)) is not None:
        lines.append(f"Eval loss:   {evals}")
    if metrics.perplexity is not None:
        lines.append(f"Perplexity:  {_num(metrics.perplexity)} (exp of the final eval loss)")
    if isinstance(queue := status.get("queue"), dict) and queue.get("name"):  # Kueue
        where = f", ClusterQueue {queue['clusterQueue']}" if queue.get("clusterQueue") else ""
        lines.append(f"Queue:       {queue.get('state')} in LocalQueue {queue['name']}{where}"
                     + (f" (Workload {queue['workload']})" if queue.get("workload") else ""))
    if status.get("attempts"):
        lines.append(f"Attempts:    {status['attempts']} ({status.get('failedAttempts', 0)} failed)")
    if status.get("adapter"):
        files = status["adapter"].get("files") or []
        lines.append(f"Adapter:     {status['adapter'].get('uri')} ({len(files)} files with sha256)")
    artifacts = Artifacts.model_validate(status.get("artifacts") or {}).to_wire()
    if artifacts:
        lines += ["Artifacts:", *_table([[k, v] for k, v in artifacts.items()])]
    if status.get("conditions"):
        lines += ["Conditions (newest last):", *conditions_table(status["conditions"])]
    return "\n".join(lines) + "\n"


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


@dataclass(frozen=True)
class Outcome:
    code: int
    message: str


def wait_outcome(obj: dict[str, Any]) -> Outcome | None:
    """The end of a run (exit 0 Succeeded, 1 Failed) with the reason to print; None while it goes on."""
    name, status = obj.get("metadata", {}).get("name"), obj.get("status") or {}
    phase = status.get("phase")
    if phase == "Succeeded":
        adapter = (status.get("adapter") or {}).get("uri") or (status.get("artifacts") or {}).get("adapter")
        cond = _condition(status, "Succeeded")
        return Outcome(EXIT_OK, f"{name} Succeeded ({cond.get('reason', 'Completed')}): adapter at {adapter}")
    if phase == "Failed":
        reason, message = failure(status)
        return Outcome(EXIT_FAILED, f"{name} Failed ({reason}): {message}".rstrip(": "))
    return None


def failure(status: dict[str, Any]) -> tuple[str, str]:
    """(reason, message) of a Failed run: the Failed condition's reason, the status message (else the condition's)."""
    cond = _condition(status, "Failed")
    return cond.get("reason") or "Failed", status.get("message") or cond.get("message") or ""


def timeout_message(obj: dict[str, Any], seconds: float) -> str:
    """Why `wait` gave up: where the run stands, and the newest condition's reason."""
    status = obj.get("status") or {}
    where = status.get("phase") or "not reconciled yet"
    if (status.get("progress") or {}).get("display"):
        where += f", {status['progress']['display']}"
    newest = max(status.get("conditions") or [{}], key=lambda c: c.get("lastTransitionTime") or "")
    why = f"; {newest.get('type')}={newest.get('status')} ({newest.get('reason')}): {newest.get('message', '')}" \
        if newest.get("reason") else ""
    return f"timed out after {seconds:g}s waiting for {obj['metadata']['name']} (phase {where}{why})".rstrip(": ")


def _one_line(text: object, limit: int) -> str:
    if text is None:
        return "-"
    flat = " ".join(str(text).split())
    if not flat:
        return "(empty)"
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def format_samples(rows: list[dict[str, Any]], count: int, limit: int = 300) -> str:
    """`lft samples NAME`: held-out prompts with the reference, the base model's and the tuned model's output."""
    if not rows:
        return "no samples (evaluation.samples is 0, or sampling stopped before the first)\n"
    lines = []
    for i, row in enumerate(rows[:count], 1):
        lines += [f"sample {i} of {len(rows)}",
                  f"  prompt:    {_one_line(row.get('prompt'), limit)}",
                  f"  reference: {_one_line(row.get('reference'), limit)}",
                  f"  base:      {_one_line(row.get('baseOutput'), limit)}",
                  f"  tuned:     {_one_line(row.get('tunedOutput'), limit)}"]
    return "\n".join(lines) + "\n"
