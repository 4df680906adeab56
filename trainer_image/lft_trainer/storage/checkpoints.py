"""Checkpoints in object storage: manifests (with the run's identity), retention, discovery and download
(the background upload is in uploader.py).

Layout under the output URI: checkpoints/checkpoint-<step>/<files...> and, written LAST,
checkpoints/checkpoint-<step>/manifest.json listing every file with its size and sha256. A checkpoint
without a valid manifest is incomplete (an upload cut short) and is never resumed from.

Resuming: `download_latest_checkpoint(storage, local_dir)` tries the complete checkpoints newest first
and skips one whose files do not match its manifest (CheckpointCorrupt); or do it step by step with
`list_complete_checkpoints` + `download_checkpoint`.
"""

from __future__ import annotations

import logging
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

from lft_api.contract import (
    CHECKPOINT_MANIFEST,
    CHECKPOINT_PREFIX,
    CHECKPOINTS_DIR,
    CheckpointRef,
    FileDigest,
    RunIdentity,
)

from .store import Storage, local_files, mismatches, sha256_file

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1
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


RUN_IDENTITY_KEY = "runIdentity"  # in manifests and training_summary.json: the run that wrote it


def identity_of(document: object) -> RunIdentity | None:
    """The RunIdentity recorded in a manifest or summary; None when absent or malformed (then: foreign)."""
    raw = document.get(RUN_IDENTITY_KEY) if isinstance(document, dict) else None
    try:
        return RunIdentity.model_validate(raw) if isinstance(raw, dict) else None
    except ValueError:
        return None


def is_own(identity: RunIdentity | None, me: RunIdentity) -> bool:
    """An artifact is this run's only with a recorded identity of the same run (none recorded: foreign)."""
    return identity is not None and me.same_run(identity)


def manifest_from_digests(step: int, files: list[FileDigest], identity: RunIdentity | None = None) -> dict:
    manifest = {
        "version": MANIFEST_VERSION,
        "step": int(step),
        "createdAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "totalBytes": sum(f.size for f in files),
        "files": [f.to_wire() for f in sorted(files, key=lambda f: f.name)],
    }
    if identity is not None:
        manifest[RUN_IDENTITY_KEY] = identity.to_wire()
    return manifest


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
    problems = mismatches(Path(local_dir), files)
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


def scan_identities(storage: Storage) -> list[tuple[int, RunIdentity | None]]:
    """(step, recorded identity) of every complete checkpoint under storage's checkpoints/, newest first."""
    complete, _ = _scan(storage)
    return [(step, identity_of(manifest)) for step, manifest in complete]


def list_complete_checkpoints(storage: Storage, owner: RunIdentity | None = None) -> list[CheckpointRef]:
    """Checkpoints with a valid manifest under storage's checkpoints/, newest first; with owner, only its own."""
    return [CheckpointRef(step=s, uri=storage.uri(checkpoint_rel(s))) for s, identity in scan_identities(storage)
            if owner is None or is_own(identity, owner)]


def find_latest_complete_checkpoint(storage: Storage) -> CheckpointRef | None:
    refs = list_complete_checkpoints(storage)
    return refs[0] if refs else None


def download_checkpoint(storage: Storage, ref: CheckpointRef, local_dir: Path) -> Path:
    """Download the files listed in ref's manifest to local_dir/checkpoint-<step>/ and verify them.

    Returns that directory (what HF Trainer's resume_from_checkpoint takes). Raises CheckpointCorrupt
    when a file is missing or does not match the manifest: the caller then tries the next-newest
    checkpoint (see download_latest_checkpoint).
    """
    return download_checkpoint_at(storage, checkpoint_rel(ref.step), ref, local_dir)


def download_checkpoint_at(storage: Storage, rel: str, ref: CheckpointRef, local_dir: Path) -> Path:
    """download_checkpoint for the checkpoint at rel under storage (rel "" when storage is the checkpoint)."""
    prefix = f"{rel}/" if rel else ""
    manifest = storage.get_json(f"{prefix}{CHECKPOINT_MANIFEST}")
    files = manifest_files(manifest)
    if files is None:
        raise CheckpointCorrupt(f"{ref.uri}: manifest is malformed or lists no files")
    dest = Path(local_dir) / checkpoint_name(ref.step)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for f in files:
        try:
            storage.download_file(f"{prefix}{f.name}", dest / f.name)
        except FileNotFoundError as exc:
            raise CheckpointCorrupt(f"{ref.uri}: {f.name} listed in the manifest is missing") from exc
    verify_dir(dest, manifest)
    return dest


def download_latest_checkpoint(storage: Storage, local_dir: Path,
                               owner: RunIdentity | None = None) -> tuple[CheckpointRef, Path] | None:
    """The newest complete checkpoint (of owner, when given) that downloads and verifies, or None.

    Corrupt ones are skipped."""
    for ref in list_complete_checkpoints(storage, owner):
        try:
            return ref, download_checkpoint(storage, ref, local_dir)
        except CheckpointCorrupt as exc:
            log.error("checkpoint %s is corrupt, trying an older one: %s", ref.uri, exc)
    return None


def prune_checkpoints(storage: Storage, keep_last: int, protect: int | None = None,
                      owner: RunIdentity | None = None) -> list[int]:
    """Apply retention remotely (see select_deletions); returns the deleted steps.

    With owner, only its own complete checkpoints count and are deleted: another run's (adopted with
    output.resumeFrom) are left alone.
    """
    complete, incomplete = _scan(storage)
    own = [s for s, manifest in complete if owner is None or is_own(identity_of(manifest), owner)]
    doomed = select_deletions(own, incomplete, keep_last, protect)
    for step in sorted(doomed):  # oldest first
        delete_checkpoint(storage, step)
    return doomed


def delete_checkpoint(storage: Storage, step: int) -> None:
    # Manifest first: a half-deleted checkpoint must look incomplete, never complete.
    storage.delete(f"{checkpoint_rel(step)}/{CHECKPOINT_MANIFEST}")
    storage.delete(checkpoint_rel(step))
