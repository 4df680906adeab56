"""Background upload of checkpoints with retention: training does not wait for storage.

Each checkpoint's files go first and its manifest last (see checkpoints.py for the layout).
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from lft_api.contract import CHECKPOINT_MANIFEST, CheckpointRef, RunIdentity

from ..errors import InvalidInput
from .checkpoints import (
    checkpoint_name,
    checkpoint_rel,
    delete_checkpoint,
    identity_of,
    manifest_files,
    manifest_from_digests,
    prune_checkpoints,
)
from .retry import describe
from .store import Storage, local_files

log = logging.getLogger(__name__)

STAGING_DIRNAME = ".lft-upload-staging"  # not matched by the HF Trainer's checkpoint-* globs


def snapshot_dir(src: Path, dest: Path) -> list[tuple[str, int, int]]:
    """Hard-link every file of src into dest (copy where linking fails, e.g. across filesystems).

    The HF Trainer may delete src (checkpoint rotation) while we upload; the links keep the data.
    Returns (name, size, mtime_ns) per file, to detect a writer rewriting a file in place.
    """
    stats = []
    for p in local_files(src):
        name = p.relative_to(src).as_posix()
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(p, target)
        except OSError:
            shutil.copy2(p, target)
        st = target.stat()
        stats.append((name, st.st_size, st.st_mtime_ns))
    return stats


class CheckpointUploader:
    """Uploads checkpoints in a background thread so training does not wait for storage.

    submit() snapshots the directory (hard links) and queues it; with max_pending=1 training is at
    most two checkpoints ahead of storage (one queued, one uploading), and submit blocks beyond that.
    For each checkpoint: any stale remote copy of the same step is removed, files are uploaded (each
    retried by Storage), the manifest is written last, retention deletes old checkpoints, then
    on_uploaded(ref) is called. A checkpoint that fails for good is logged and skipped; the next goes.
    But an InvalidInput (a file holding a secret: secret_scan.py) ends the run: it is kept in `fatal` and
    raised in the training thread by the next submit() and by raise_fatal(); nothing more is uploaded.

    The same step submitted again (SIGTERM right after a periodic save) is not re-uploaded when a
    complete remote copy with the same file names and sizes exists.

    NB: the snapshot shares inodes with the source. Don't rewrite files of a submitted directory in
    place (e.g. saving the same step twice): the uploader notices a changed file and writes no manifest
    for that checkpoint rather than a wrong one.
    """

    def __init__(self, storage: Storage, keep_last: int,
                 on_uploaded: Callable[[CheckpointRef], None] | None = None,
                 max_pending: int = 1, staging_root: Path | None = None,
                 identity: RunIdentity | None = None,
                 on_failed: Callable[[int, str], None] | None = None):
        self.storage = storage
        self.keep_last = keep_last
        self.identity = identity  # recorded in each manifest; retention then deletes only its checkpoints
        self.on_uploaded = on_uploaded
        self.on_failed = on_failed
        self.staging_root = staging_root
        self.uploaded: list[CheckpointRef] = []
        self.failed: list[int] = []
        self.fatal: InvalidInput | None = None  # the first permanent failure; ends the run (raise_fatal)
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, max_pending))
        self._cond = threading.Condition()
        self._pending = 0
        self._failed_since_flush = False
        self._closed = False
        self._staging_roots: set[Path] = set()
        self._thread = threading.Thread(target=self._worker, name="checkpoint-uploader", daemon=True)
        self._thread.start()

    @property
    def last_uploaded(self) -> CheckpointRef | None:
        return self.uploaded[-1] if self.uploaded else None

    @property
    def pending(self) -> int:
        with self._cond:
            return self._pending

    def raise_fatal(self) -> None:
        """Raise the permanent failure of an upload, if there was one (in the training thread)."""
        if self.fatal is not None:
            raise self.fatal

    def submit(self, local_checkpoint_dir: Path, step: int) -> None:
        """Snapshot local_checkpoint_dir now and queue its upload (blocks while the queue is full).
        Raises the permanent failure of an earlier upload (raise_fatal)."""
        self.raise_fatal()
        if self._closed:
            raise RuntimeError("uploader is closed")
        src = Path(local_checkpoint_dir)
        root = self.staging_root or (src.parent / STAGING_DIRNAME)
        self._staging_roots.add(root)
        snap = root / f"{checkpoint_name(step)}-{uuid.uuid4().hex[:8]}"
        snap.mkdir(parents=True)
        stats = snapshot_dir(src, snap)
        if not stats:
            shutil.rmtree(snap, ignore_errors=True)
            raise ValueError(f"checkpoint directory {src} has no files")
        with self._cond:
            self._pending += 1
        log.info("checkpoint %d queued for upload (%d files)", step, len(stats))
        self._queue.put((snap, step, stats))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for every submitted checkpoint; True when all are done and none failed since the last flush."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending > 0:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            ok = not self._failed_since_flush
            self._failed_since_flush = False
            return ok

    def close(self, timeout: float | None = None) -> bool:
        """Flush, then stop the worker. Returns flush's result."""
        ok = self.flush(timeout)
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join(timeout=5 if not ok else None)
            for root in self._staging_roots:
                try:
                    root.rmdir()  # only when empty
                except OSError:
                    pass
        return ok

    # -- worker ---------------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            snap, step, stats = item
            ok = False
            try:
                if self.fatal is None:  # after a permanent failure nothing more goes out
                    self._upload(snap, step, stats)
                    ok = True
            except InvalidInput as exc:
                log.error("checkpoint %d: %s", step, exc.message)
                self.fatal = self.fatal or exc
                self._notify(self.on_failed, step, exc.message)
            except Exception as exc:
                log.exception("checkpoint %d: upload failed; it will not be resumed from", step)
                self._notify(self.on_failed, step, describe(exc))
            finally:
                shutil.rmtree(snap, ignore_errors=True)
                with self._cond:
                    self._pending -= 1
                    if not ok:
                        self.failed.append(step)
                        self._failed_since_flush = True
                    self._cond.notify_all()

    def _same_complete_copy_exists(self, rel: str, step: int, stats: list[tuple[str, int, int]]) -> bool:
        """True when the remote checkpoint of this step is complete with the same file names and sizes."""
        try:
            remote = self.storage.get_json(f"{rel}/{CHECKPOINT_MANIFEST}")
        except (FileNotFoundError, ValueError):
            return False
        files = manifest_files(remote)
        if files is None or remote.get("step") != step or identity_of(remote) != self.identity:
            return False
        local = {name: size for name, size, _ in stats if name != CHECKPOINT_MANIFEST}
        return {f.name: f.size for f in files} == local

    def _upload(self, snap: Path, step: int, stats: list[tuple[str, int, int]]) -> None:
        started = time.monotonic()
        rel = checkpoint_rel(step)
        ref = CheckpointRef(step=step, uri=self.storage.uri(rel))
        if self._same_complete_copy_exists(rel, step, stats):
            # Saved twice at one step (e.g. SIGTERM right after a periodic save, or right after a
            # resume): keep the complete copy rather than open a window with no complete checkpoint.
            log.info("checkpoint %d is already complete at %s; not uploading it again", step, ref.uri)
        else:
            # A stale copy of this step (an earlier attempt) must not mix with the new files: manifest first.
            if self.storage.exists(rel):
                delete_checkpoint(self.storage, step)
            files = self.storage.upload_dir(snap, rel, exclude=lambda name: name == CHECKPOINT_MANIFEST)
            changed = [name for name, size, mtime in stats
                       if not (snap / name).is_file() or (snap / name).stat().st_size != size
                       or (snap / name).stat().st_mtime_ns != mtime]
            if changed:
                raise RuntimeError(f"files changed while uploading (rewritten in place?): {', '.join(changed)}")
            self.storage.put_json(f"{rel}/{CHECKPOINT_MANIFEST}", manifest_from_digests(step, files, self.identity))
            log.info("checkpoint %d uploaded to %s (%d files, %d bytes, %.1fs)", step, ref.uri, len(files),
                     sum(f.size for f in files), time.monotonic() - started)
        self.uploaded.append(ref)
        try:
            deleted = prune_checkpoints(self.storage, self.keep_last, protect=step, owner=self.identity)
            if deleted:
                log.info("deleted old checkpoints %s (keepLast=%d)", deleted, self.keep_last)
        except Exception:
            log.exception("checkpoint retention failed (old checkpoints kept)")
        self._notify(self.on_uploaded, ref)

    @staticmethod
    def _notify(callback: Callable | None, *args) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:  # a reporting hook must never stop the uploads
            log.exception("checkpoint callback %s failed", getattr(callback, "__name__", callback))
