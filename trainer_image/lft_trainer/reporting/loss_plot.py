"""loss.png: train and eval loss against optimizer steps, drawn from metrics.jsonl's rows with matplotlib (Agg).

matplotlib is imported lazily: without it, `plot_loss` raises PlotUnavailable and the run goes on with
metrics.jsonl alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class PlotUnavailable(Exception):
    """The picture cannot be drawn here (matplotlib is not installed)."""


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise PlotUnavailable("matplotlib is not installed") from exc
    matplotlib.use("Agg", force=True)  # no display in a pod
    import matplotlib.pyplot as plt

    return plt


def _points(rows: list[dict[str, Any]], field: str) -> tuple[list[int], list[float]]:
    pairs = [(r["step"], r[field]) for r in rows if r.get(field) is not None]
    return [s for s, _ in pairs], [v for _, v in pairs]


def _mark(ax, step: int, value: float, label: str, left: bool = False) -> None:
    """A labelled point; left: the label on its left (the last step, at the right edge)."""
    ax.scatter([step], [value], s=60, marker="D", color="tab:red", zorder=3)
    ax.annotate(f"{label}\n{value:.4f}", (step, value), textcoords="offset points", xytext=(-8 if left else 8, 6),
                ha="right" if left else "left", fontsize=8)


def plot_loss(rows: list[dict[str, Any]], path: Path, title: str | None = None, final: bool = False) -> Path:
    """Write the PNG to path. The eval loss at step 0 is marked "eval before"; with final, the last
    evaluation at the last step is marked "eval after". Raises PlotUnavailable without matplotlib."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    try:
        train_steps, train_loss = _points(rows, "loss")
        eval_steps, eval_loss = _points(rows, "evalLoss")
        if train_steps:
            ax.plot(train_steps, train_loss, color="tab:blue", linewidth=1.2,
                    marker="o" if len(train_steps) == 1 else None, label="train loss")
        if eval_steps:
            ax.plot(eval_steps, eval_loss, color="tab:orange", marker="o", linestyle="--", label="eval loss")
            if eval_steps[0] == 0:
                _mark(ax, 0, eval_loss[0], "eval before")
            last = rows[-1]["step"] if rows else None
            if final and eval_steps[-1] == last and last != 0:
                _mark(ax, eval_steps[-1], eval_loss[-1], "eval after", left=True)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax.set_title(f"{title}: loss" if title else "loss")
        ax.grid(True, alpha=0.3)
        if train_steps or eval_steps:
            ax.legend(loc="upper right")
        else:
            ax.text(0.5, 0.5, "no steps logged yet", ha="center", va="center", transform=ax.transAxes)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path
