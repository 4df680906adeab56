"""Checkpoints in object storage: manifests, background upload with retention, discovery and download.

Layout under the output URI: checkpoints/checkpoint-<step>/<files...> and, written LAST,
checkpoints/checkpoint-<step>/manifest.json listing every file with its size and sha256. A checkpoint
without a valid manifest is incomplete (an upload cut short) and is never resumed from.

Resuming: `download_latest_checkpoint(storage, local_dir)` tries the complete checkpoints newest first
and skips one whose files do not match its manifest (CheckpointCorrupt); or do it step by step with
`list_complete_checkpoints` + `download_checkpoint`.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from lft_api.contract import CHECKPOINT_MANIFEST, CHECKPOINT_PREFIX, CHECKPOINTS_DIR, CheckpointRef, FileDigest

from .storage import Storage, local_files, sha256_file

log = logging.getLogger("lft_trainer.checkpoints")

MANIFEST_VERSION = 1
STAGING_DIRNAME = ".lft-upload-staging"  # not matched by the HF Trainer's checkpoint-* globs
_STEP_RE = re.compile(rf"^{re.escape(CHECKPOINT_PREFIX)}(\d+)$")


class CheckpointCorrupt(Exception):
    """A checkpoint's files do not match its manifest (missing, wrong size or sha256)."""


# ---------------------------------------------------------------------------------------------
# pure manifest logic
# ---------------------------------------------------------------------------------------------
def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step}"


def checkpoint_rel(step: int) -> str:
    """Path of a checkpoint relative to the output URI."""
    return f"{CHECKPOINTS_DIR}/{checkpoint_name(step)}"


def parse_step(name: str) -> int | None:
    """42 for "checkpoint-42"; None for anything else."""
    m = _STEP_RE.match(name.rstrip("/").rsplit("/", 1)[-1])
    return int(m.group(1)) if m else None


def file_digests(local_dir: Path) -> list[FileDigest]:
    """name (relative, posix), size and sha256 of every file under local_dir except a manifest."""
    local_dir = Path(local_dir)
    return [
        FileDigest(name=p.relative_to(local_dir).as_posix(), size=p.stat().st_size, sha256=sha256_file(p))
        for p in local_files(local_dir)
        if p.relative_to(local_dir).as_posix() != CHECKPOINT_MANIFEST
    ]


def manifest_from_digests(step: int, files: list[FileDigest]) -> dict:
    return {
        "version": MANIFEST_VERSION,
        "step": int(step),
        "createdAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "totalBytes": sum(f.size for f in files),
        "files": [f.to_wire() for f in sorted(files, key=lambda f: f.name)],
    }


def build_manifest(local_dir: Path, step: int) -> dict:
    """The manifest of a local checkpoint directory."""
    return manifest_from_digests(step, file_digests(Path(local_dir)))


def manifest_files(manifest: object) -> list[FileDigest] | None:
    """The manifest's files when it is well formed and lists at least one file; else None."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("step"), int):
        return None
    raw = manifest.get("files")
    if not isinstance(raw, list) or not raw:
        return None
    try:
        files = [FileDigest.model_validate(f) for f in raw]
    except (ValueError, TypeError):
        return None
    names = [f.name for f in files]
    if len(set(names)) != len(names) or any(n.startswith("/") or ".." in n.split("/") for n in names):
        return None
    return files


def verify_dir(local_dir: Path, manifest: dict) -> None:
    """Raise CheckpointCorrupt unless every file in the manifest is in local_dir with its size and sha256.

    Extra local files are ignored (the manifest is the checkpoint).
    """
    files = manifest_files(manifest)
    if files is None:
        raise CheckpointCorrupt("manifest is malformed or lists no files")
    problems: list[str] = []
    for f in files:
        p = Path(local_dir) / f.name
        if not p.is_file():
            problems.append(f"{f.name}: missing")
        elif p.stat().st_size != f.size:
            problems.append(f"{f.name}: size {p.stat().st_size} != {f.size}")
        elif sha256_file(p) != f.sha256:
            problems.append(f"{f.name}: sha256 mismatch")
    if problems:
        raise CheckpointCorrupt(f"{local_dir}: " + "; ".join(problems))


def select_deletions(complete_steps: list[int], incomplete_steps: list[int], keep_last: int,
                     protect: int | None = None) -> list[int]:
    """Steps to delete remotely: complete ones beyond the newest keep_last (never `protect`), and
    incomplete leftovers older than the newest complete one (younger ones may still be uploading
    from another process, and are harmless: they have no manifest)."""
    newest_first = sorted(set(complete_steps), reverse=True)
    keep = set(newest_first[:max(1, keep_last)])
    if protect is not None:
        keep.add(protect)
    doomed = [s for s in newest_first if s not in keep]
    if newest_first:
        doomed += [s for s in set(incomplete_steps) if s < newest_first[0] and s != protect]
    return sorted(set(doomed))


# ---------------------------------------------------------------------------------------------
# remote discovery and download
# ---------------------------------------------------------------------------------------------
def _scan(storage: Storage) -> tuple[list[tuple[int, dict]], list[int]]:
    """([(step, manifest)] of complete checkpoints newest first, [steps of incomplete ones])."""
    complete: list[tuple[int, dict]] = []
    incomplete: list[int] = []
    steps = sorted((s for s in map(parse_step, storage.list_dirs(CHECKPOINTS_DIR)) if s is not None), reverse=True)
    for step in steps:
        try:
            manifest = storage.get_json(f"{checkpoint_rel(step)}/{CHECKPOINT_MANIFEST}")
        except FileNotFoundError:
            incomplete.append(step)
            continue
        except ValueError:  # unreadable JSON: treat as incomplete
            incomplete.append(step)
            continue
        if manifest_files(manifest) is None or manifest.get("step") != step:
            incomplete.append(step)
        else:
            complete.append((step, manifest))
    return complete, incomplete


def list_complete_checkpoints(storage: Storage) -> list[CheckpointRef]:
    """Checkpoints with a valid manifest under storage's checkpoints/, newest first."""
    complete, _ = _scan(storage)
    return [CheckpointRef(step=s, uri=storage.uri(checkpoint_rel(s))) for s, _ in complete]


def find_latest_complete_checkpoint(storage: Storage) -> CheckpointRef | None:
    refs = list_complete_checkpoints(storage)
    return refs[0] if refs else None


def download_checkpoint(storage: Storage, ref: CheckpointRef, local_dir: Path) -> Path:
    """Download the files listed in ref's manifest to local_dir/checkpoint-<step>/ and verify them.

    Returns that directory (what HF Trainer's resume_from_checkpoint takes). Raises CheckpointCorrupt
    when a file is missing or does not match the manifest: the caller then tries the next-newest
    checkpoint (see download_latest_checkpoint).
    """
    rel = checkpoint_rel(ref.step)
    manifest = storage.get_json(f"{rel}/{CHECKPOINT_MANIFEST}")
    files = manifest_files(manifest)
    if files is None:
        raise CheckpointCorrupt(f"{ref.uri}: manifest is malformed or lists no files")
    dest = Path(local_dir) / checkpoint_name(ref.step)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for f in files:
        try:
            storage.download_file(f"{rel}/{f.name}", dest / f.name)
        except FileNotFoundError as exc:
            raise CheckpointCorrupt(f"{ref.uri}: {f.name} listed in the manifest is missing") from exc
    verify_dir(dest, manifest)
    return dest


def download_latest_checkpoint(storage: Storage, local_dir: Path) -> tuple[CheckpointRef, Path] | None:
    """The newest complete checkpoint that downloads and verifies, or None. Corrupt ones are skipped."""
    for ref in list_complete_checkpoints(storage):
        try:
            return ref, download_checkpoint(storage, ref, local_dir)
        except CheckpointCorrupt as exc:
            log.error("checkpoint %s is corrupt, trying an older one: %s", ref.uri, exc)
    return None


def prune_checkpoints(storage: Storage, keep_last: int, protect: int | None = None) -> list[int]:
    """Apply retention remotely (see select_deletions); returns the deleted steps."""
    complete, incomplete = _scan(storage)
    doomed = select_deletions([s for s, _ in complete], incomplete, keep_last, protect)
    for step in sorted(doomed):  # oldest first
        # Manifest first: a half-deleted checkpoint must look incomplete, never complete.
        storage.delete(f"{checkpoint_rel(step)}/{CHECKPOINT_MANIFEST}")
        storage.delete(checkpoint_rel(step))
    return doomed


# ---------------------------------------------------------------------------------------------
# background uploader
# ---------------------------------------------------------------------------------------------
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

    The same step submitted again (SIGTERM right after a periodic save) is not re-uploaded when a
    complete remote copy with the same file names and sizes exists.

    NB: the snapshot shares inodes with the source. Don't rewrite files of a submitted directory in
    place (e.g. saving the same step twice): the uploader notices a changed file and writes no manifest
    for that checkpoint rather than a wrong one.
    """

    def __init__(self, storage: Storage, keep_last: int,
                 on_uploaded: Callable[[CheckpointRef], None] | None = None,
                 max_pending: int = 1, staging_root: Path | None = None):
        self.storage = storage
        self.keep_last = keep_last
        self.on_uploaded = on_uploaded
        self.staging_root = staging_root
        self.uploaded: list[CheckpointRef] = []
        self.failed: list[int] = []
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

    def submit(self, local_checkpoint_dir: Path, step: int) -> None:
        """Snapshot local_checkpoint_dir now and queue its upload (blocks while the queue is full)."""
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
                self._upload(snap, step, stats)
                ok = True
            except Exception:
                log.exception("checkpoint %d: upload failed; it will not be resumed from", step)
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
        if files is None or remote.get("step") != step:
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
                self.storage.delete(f"{rel}/{CHECKPOINT_MANIFEST}")
                self.storage.delete(rel)
            files = self.storage.upload_dir(snap, rel, exclude=lambda name: name == CHECKPOINT_MANIFEST)
            changed = [name for name, size, mtime in stats
                       if not (snap / name).is_file() or (snap / name).stat().st_size != size
                       or (snap / name).stat().st_mtime_ns != mtime]
            if changed:
                raise RuntimeError(f"files changed while uploading (rewritten in place?): {', '.join(changed)}")
            self.storage.put_json(f"{rel}/{CHECKPOINT_MANIFEST}", manifest_from_digests(step, files))
            log.info("checkpoint %d uploaded to %s (%d files, %d bytes, %.1fs)", step, ref.uri, len(files),
                     sum(f.size for f in files), time.monotonic() - started)
        self.uploaded.append(ref)
        try:
            deleted = prune_checkpoints(self.storage, self.keep_last, protect=step)
            if deleted:
                log.info("deleted old checkpoints %s (keepLast=%d)", deleted, self.keep_last)
        except Exception:
            log.exception("checkpoint retention failed (old checkpoints kept)")
        if self.on_uploaded is not None:
            try:
                self.on_uploaded(ref)
            except Exception:
                log.exception("on_uploaded callback failed for checkpoint %d", step)
