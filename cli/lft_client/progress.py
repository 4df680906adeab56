"""What wait() shows while it waits: one printed line per change, or a tqdm bar when tqdm is installed (it is not
required), or the user's own callback. A change: another phase, step, queue state or status message."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, Literal, TextIO

from .finetune import FineTune

OnProgress = Callable[[FineTune], Any] | Literal["auto", "print", "tqdm"] | None


def change_key(ft: FineTune) -> tuple[Any, ...]:
    """What, when it changes, is worth one more line."""
    status = ft.raw.get("status") or {}
    progress, queue = status.get("progress") or {}, status.get("queue") or {}
    return ft.phase, progress.get("step"), progress.get("totalSteps"), queue.get("state"), status.get("message")


class PrintProgress:
    """One line per change: '12:03:04 name: Running, 120/300 (40%), epoch 1.2, ETA 3m20s, loss 1.2345'."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream

    def __call__(self, ft: FineTune) -> None:
        print(f"{time.strftime('%H:%M:%S')} {ft.summary()}", file=self.stream or sys.stdout, flush=True)


class TqdmProgress:
    """A tqdm bar over the run's steps (tqdm.auto: a widget in Jupyter, text in a terminal), with the phase, loss
    and ETA after it. Until the first status.progress (pending, queued), and when the run ends or is suspended, a
    line as PrintProgress prints."""

    def __init__(self) -> None:
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self.bar: Any = None

    def __call__(self, ft: FineTune) -> None:
        progress = ft.progress
        if progress is not None and self.bar is None:
            self.bar = self._tqdm(total=progress.total_steps, desc=ft.name, unit="step", dynamic_ncols=True)
        if self.bar is None:  # pending, queued: lines until the trainer reports its first step
            self._tqdm.write(f"{time.strftime('%H:%M:%S')} {ft.summary()}")
            return
        if progress is not None:
            self.bar.total = progress.total_steps
            self.bar.n = progress.step
        loss = ft.metrics.loss if ft.metrics is not None else None
        postfix = {"phase": ft.phase or "Pending"}
        if loss is not None:
            postfix["loss"] = f"{loss:g}"
        if progress is not None and progress.eta:
            postfix["eta"] = progress.eta
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.refresh()
        if ft.phase in ("Succeeded", "Failed", "Suspended"):
            self._tqdm.write(f"{time.strftime('%H:%M:%S')} {ft.summary()}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _tqdm_installed() -> bool:
    try:
        import tqdm.auto  # noqa: F401
    except ImportError:
        return False
    return True


def reporter(on_progress: OnProgress) -> Callable[[FineTune], Any] | None:
    """The callback wait() calls on each change: "auto" (the default) a tqdm bar when tqdm is installed, else
    printed lines; "print"; "tqdm" (ImportError without it); a callable of yours; None for silence."""
    if on_progress is None or callable(on_progress):
        return on_progress
    if on_progress == "print" or (on_progress == "auto" and not _tqdm_installed()):
        return PrintProgress()
    if on_progress in ("tqdm", "auto"):
        return TqdmProgress()
    raise ValueError(f"on_progress: a callable, 'auto', 'print', 'tqdm' or None, not {on_progress!r}")
