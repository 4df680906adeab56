"""The resume point of a run, decided in one place for every entry point (single process, the DDP
launcher and its ranks): this run's newest complete checkpoint; else output.resumeFrom when set; else none.

Another run's checkpoints are never picked up silently: only through output.resumeFrom, validated here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from lft_api.conditions import Reason
from lft_api.contract import CHECKPOINT_MANIFEST, CheckpointRef, RunIdentity
from lft_api.spec import TrainerConfig

from ..errors import InvalidInput
from ..settings import ENV_RESUME_DIR, ENV_RESUME_STEP, ENV_RESUME_URI, Settings
from ..storage.checkpoints import (
    CheckpointCorrupt,
    download_checkpoint_at,
    download_latest_checkpoint,
    identity_of,
    parse_step,
)
from ..storage.store import Storage
from .distributed import world_size

log = logging.getLogger(__name__)



@dataclass
class ResumePoint:
    step: int
    path: Path  # the local copy, what the HF Trainer's resume_from_checkpoint takes
    uri: str
    adopted_from: RunIdentity | None = None  # output.resumeFrom: the run that wrote it (None: unrecorded/own)

    def env(self) -> dict[str, str]:
        """What the launcher passes to its ranks."""
        return {ENV_RESUME_DIR: str(self.path), ENV_RESUME_STEP: str(self.step), ENV_RESUME_URI: self.uri}


def find_resume_point(config: TrainerConfig, out: Storage, me: RunIdentity, local_dir: Path,
                      settings: Settings | None = None) -> ResumePoint | None:
    """Where this run continues from (see the module docstring); downloads and verifies the checkpoint.

    A rank started by the launcher gets the launcher's decision from its settings. Raises InvalidInput
    (field output.resumeFrom) when output.resumeFrom is needed and is not a usable checkpoint.
    """
    settings = settings or Settings.from_environ()
    if settings.resume_dir:
        return ResumePoint(step=settings.resume_step, path=Path(settings.resume_dir), uri=settings.resume_uri)
    if world_size() > 1:
        return None  # a rank: the launcher found nothing to resume from
    found = download_latest_checkpoint(out, local_dir, owner=me)
    if found is not None:
        ref, path = found
        log.info("resuming from this run's checkpoint %s", ref.uri)
        return ResumePoint(step=ref.step, path=path, uri=ref.uri)
    if config.output.resume_from:
        return download_resume_from(config.output.resume_from, Storage(config.output.resume_from, config.storage),
                                    local_dir)
    return None


def download_resume_from(uri: str, at: Storage, local_dir: Path) -> ResumePoint:
    """The checkpoint output.resumeFrom names, downloaded and verified; InvalidInput saying why it is unusable."""
    def invalid(why: str) -> InvalidInput:
        return InvalidInput(Reason.INVALID_RESUME_FROM, f"output.resumeFrom {uri}: {why}", field="output.resumeFrom", file=uri)

    try:
        manifest = at.get_json(CHECKPOINT_MANIFEST)
    except FileNotFoundError:
        raise invalid("no manifest.json there: not a checkpoint, or its upload did not finish") from None
    except ValueError:
        raise invalid("manifest.json is not valid JSON (a corrupt checkpoint)") from None
    step = manifest.get("step") if isinstance(manifest, dict) else None
    if not isinstance(step, int) or (parse_step(uri) is not None and parse_step(uri) != step):
        raise invalid(f"manifest.json names step {step!r}, not the checkpoint's step")
    try:
        path = download_checkpoint_at(at, "", CheckpointRef(step=step, uri=uri), local_dir)
    except CheckpointCorrupt as exc:
        raise invalid(f"the checkpoint is incomplete or corrupt: {exc}") from None
    owner = identity_of(manifest)
    log.warning("resuming from output.resumeFrom %s (step %d, written by %s)", uri, step,
                owner.describe() if owner else "a run that recorded no identity")
    return ResumePoint(step=step, path=path, uri=uri, adopted_from=owner)
