"""Who owns the output prefix: a run writes only where it finds nothing, or only its own artifacts.

Every artifact a run writes records its RunIdentity (checkpoints/*/manifest.json, training_summary.json,
adapter/lft_run.json). Pre-flight inspects the prefix and `decide_ownership` (pure) says: go on, refuse
(another run's artifacts: OutputInUse, exit 3), or, with output.overwrite, delete the other run's first.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from lft_api import contract
from lft_api.conditions import Reason
from lft_api.contract import RunIdentity
from lft_api.spec import TrainerConfig

from ..errors import InvalidInput
from .checkpoints import checkpoint_rel, delete_checkpoint, identity_of, is_own, parse_step, scan_identities
from .store import Storage

log = logging.getLogger(__name__)

ADAPTER_IDENTITY_FILE = "lft_run.json"  # adapter/lft_run.json: the RunIdentity of the run that trained it


def run_identity(config: TrainerConfig, env: Mapping[str, str] | None = None) -> RunIdentity:
    """This run's identity: the LoRAFineTune (LFT_NAMESPACE/LFT_NAME/LFT_UID, unset outside Kubernetes)
    and the hash of the settings that determine the result."""
    env = os.environ if env is None else env
    return RunIdentity(namespace=env.get(contract.ENV_RESOURCE_NAMESPACE) or None,
                       name=env.get(contract.ENV_RESOURCE_NAME) or None,
                       uid=env.get(contract.ENV_RESOURCE_UID) or None, spec_hash=config.result_hash())


@dataclass(frozen=True)
class Artifact:
    path: str  # relative to the output URI: checkpoints/checkpoint-40, training_summary.json, adapter
    identity: RunIdentity | None  # None: written by a run that recorded no identity (foreign)


@dataclass
class OwnershipDecision:
    action: Literal["ok", "refuse", "overwrite"]
    foreign: list[Artifact] = field(default_factory=list)
    message: str = ""

    @property
    def replaced(self) -> list[RunIdentity]:
        """The other runs whose artifacts are replaced (identity-less ones are not listed)."""
        out: list[RunIdentity] = []
        for a in self.foreign:
            if a.identity is not None and a.identity not in out:
                out.append(a.identity)
        return out


def _owners(artifacts: list[Artifact]) -> str:
    names: list[str] = []
    for a in artifacts:
        name = a.identity.describe() if a.identity else "a run that recorded no identity"
        if name not in names:
            names.append(name)
    return " and ".join(names)


def decide_ownership(me: RunIdentity, artifacts: list[Artifact], uri: str, overwrite: bool,
                     adopting: bool = False) -> OwnershipDecision:
    """ok / refuse (with the message) / overwrite (delete `foreign` first). Pure.

    adopting: output.resumeFrom names a checkpoint under this prefix: the user continues that run here
    deliberately, so its artifacts are not in the way (retention still deletes only this run's own).
    """
    foreign = [a for a in artifacts if not is_own(a.identity, me)]
    if not foreign or adopting:
        return OwnershipDecision("ok", foreign)
    paths = ", ".join(a.path for a in foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    if overwrite:
        return OwnershipDecision("overwrite", foreign, f"output.overwrite: deleting {paths} of {_owners(foreign)} "
                                 f"under {uri}")
    return OwnershipDecision("refuse", foreign, (
        f"output.uri {uri} holds artifacts of {_owners(foreign)} ({paths}): use another output.uri, set "
        "output.overwrite: true to replace them, or output.resumeFrom to continue from one of its checkpoints"))


def inspect_output(out: Storage) -> list[Artifact]:
    """The artifacts under the output prefix, each with the identity it records."""
    found = [Artifact(checkpoint_rel(step), identity) for step, identity in scan_identities(out)]
    try:
        found.append(Artifact(contract.SUMMARY_FILE, identity_of(out.get_json(contract.SUMMARY_FILE))))
    except FileNotFoundError:
        pass
    except ValueError:  # not JSON: still someone's file
        found.append(Artifact(contract.SUMMARY_FILE, None))
    if out.exists(contract.ADAPTER_DIR):
        try:
            raw = out.get_json(f"{contract.ADAPTER_DIR}/{ADAPTER_IDENTITY_FILE}")
            found.append(Artifact(contract.ADAPTER_DIR, identity_of({"runIdentity": raw})))
        except (FileNotFoundError, ValueError):
            found.append(Artifact(contract.ADAPTER_DIR, None))
    return found


def check_output(config: TrainerConfig, out: Storage, me: RunIdentity) -> OwnershipDecision:
    """Refuse another run's prefix (InvalidInput OutputInUse) or, with output.overwrite, delete its artifacts."""
    adopting = bool(config.output.resume_from) and config.output.resume_from.rstrip("/").startswith(
        out.uri(contract.CHECKPOINTS_DIR) + "/")
    decision = decide_ownership(me, inspect_output(out), out.base_uri, config.output.overwrite, adopting)
    if decision.action == "refuse":
        raise InvalidInput(Reason.OUTPUT_IN_USE, decision.message, field="output.uri")
    if decision.action == "overwrite":
        log.warning("%s", decision.message)
        for artifact in decision.foreign:
            step = parse_step(artifact.path) if artifact.path.startswith(contract.CHECKPOINTS_DIR) else None
            if step is not None:
                delete_checkpoint(out, step)
            else:
                out.delete(artifact.path)
        if any(a.path == contract.ADAPTER_DIR for a in decision.foreign):
            out.delete(contract.MERGED_DIR)  # the merged model of the replaced adapter
        # Its history and its trackers' files (they record no identity): TensorBoard would draw both runs' curves.
        for name in (contract.METRICS_FILE, contract.LOSS_PLOT_FILE, contract.TENSORBOARD_DIR, contract.WANDB_DIR):
            out.delete(name)
    return decision
