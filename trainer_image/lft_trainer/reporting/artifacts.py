"""The run's history under the output URI, next to the adapter: metrics.jsonl and loss.png (and, through `also`,
the experiment trackers' files: tracking.py).

Layout: <output>/metrics.jsonl (history.py) and <output>/loss.png (loss_plot.py), refreshed at every
checkpoint save and written once more at the end, after the adapter. During training the HistoryWriter
refreshes them in a background thread (the newest request wins; a failure is logged at most once a
minute and never stops training); at the end `HistoryWriter.finish` writes them synchronously and a
storage failure raises StorageError like the summary's. Without matplotlib the picture is skipped (logged
once) and metrics.jsonl is still written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lft_api import contract
from lft_api.contract import Artifacts

from ..storage.retry import describe
from ..storage.store import Storage
from .history import metrics_rows, to_jsonl
from .loss_plot import PlotUnavailable, plot_loss
from .progress import RateLimiter

log = logging.getLogger(__name__)

_unavailable_logged = False


@dataclass
class Written:
    artifacts: Artifacts  # the URIs written
    plot_skipped: str | None = None  # why loss.png was not drawn


def _log_unavailable_once(reason: str) -> None:
    global _unavailable_logged
    if not _unavailable_logged:
        _unavailable_logged = True
        log.warning("loss.png skipped (%s); metrics.jsonl is still written", reason)


def _draw(rows: list[dict[str, Any]], path: Path, title: str | None, final: bool) -> tuple[Path | None, str | None]:
    """(the picture, None), or (None, why not): a picture is never worth the run."""
    try:
        return plot_loss(rows, path, title, final), None
    except PlotUnavailable as exc:
        _log_unavailable_once(str(exc))
        return None, str(exc)
    except Exception as exc:
        log.warning("loss.png could not be drawn: %s", describe(exc))
        return None, f"drawing failed: {describe(exc)}"[:300]


def write_history(out: Storage, local_dir: Path, rows: list[dict[str, Any]], title: str | None = None,
                  final: bool = False) -> Written:
    """metrics.jsonl, then loss.png, written under local_dir and uploaded to the output root.
    A storage failure raises StorageError; a picture that cannot be drawn is skipped."""
    local_dir.mkdir(parents=True, exist_ok=True)
    metrics = local_dir / contract.METRICS_FILE
    metrics.write_bytes(to_jsonl(rows))
    out.upload_file(metrics, contract.METRICS_FILE)
    written = Written(Artifacts(metrics=out.uri(contract.METRICS_FILE)))
    picture, written.plot_skipped = _draw(rows, local_dir / contract.LOSS_PLOT_FILE, title, final)
    if picture is not None:
        out.upload_file(picture, contract.LOSS_PLOT_FILE)
        written.artifacts = written.artifacts.merged_with(Artifacts(loss_plot=out.uri(contract.LOSS_PLOT_FILE)))
    return written


class HistoryWriter:
    """Refreshes metrics.jsonl and loss.png off the training thread (rank 0).

    refresh() copies the log history and returns at once; the worker writes the newest request (older ones
    waiting are dropped) and calls on_written with the URIs. Failures are logged at most once a minute.
    """

    def __init__(self, out: Storage, local_dir: Path, title: str | None = None,
                 on_written: Callable[[Artifacts], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 also: Callable[[bool], Artifacts] | None = None):
        self.out, self.local_dir, self.title, self.on_written = out, local_dir, title, on_written
        self.also = also  # more uploads with each refresh (final=False) and at the end (True): tracking.Tracker.sync
        self.writes = 0
        self.failures = 0
        self._error_log = RateLimiter(60.0, clock)  # a failure is logged at most once a minute
        self._pending: tuple[list[dict[str, Any]], float | None] | None = None
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._worker, name="history-writer", daemon=True)
        self._thread.start()

    def refresh(self, log_history: list[dict[str, Any]], eval_before: float | None) -> None:
        with self._cond:
            if self._closed:
                return
            self._pending = ([dict(e) for e in log_history], eval_before)
            self._cond.notify_all()

    def close(self, timeout: float | None = None) -> bool:
        """Write what is pending, then stop the worker; True when it stopped within timeout."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def finish(self, log_history: list[dict[str, Any]], eval_before: float | None, eval_after: float | None,
               last_step: int) -> Written:
        """The final history, written now (after the background refreshes); StorageError propagates."""
        if not self.close(timeout=120):
            log.warning("the last background refresh of metrics.jsonl is still running; writing the final one")
        rows = metrics_rows(log_history, eval_before, eval_after, last_step)
        # Its own folder: a refresh still running past the timeout writes the other one.
        written = write_history(self.out, self.local_dir / "final", rows, self.title, final=True)
        if self.also is not None:
            written.artifacts = written.artifacts.merged_with(self.also(True))
        return written

    def _worker(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._pending is None:
                    return
                (history, eval_before), self._pending = self._pending, None
            try:
                written = write_history(self.out, self.local_dir, metrics_rows(history, eval_before), self.title)
                if self.also is not None:
                    written.artifacts = written.artifacts.merged_with(self.also(False))
                self.writes += 1
                if self.on_written is not None:
                    self.on_written(written.artifacts)
            except Exception as exc:  # never stops training
                self.failures += 1
                if self._error_log.allow():
                    log.warning("refreshing metrics.jsonl/loss.png failed (training goes on): %s", describe(exc))
