"""lora.init pissa and olora: the adapter starts from the principal (SVD) or QR components of each adapted weight,
which PEFT moves out of the base weights (W_res = W - scale * B0 A0). The trained adapter fits W_res, not the
published base model; what is published is PEFT's conversion to an adapter of the unmodified base:
dW = B A - B0 A0 = [B | -B0] [A ; A0], rank 2r (save_pretrained with path_initial_model_for_weight_conversion).

- save_initial: the adapter as initialised (B0, A0), saved before training, its config marked init_lora_weights
  True: loading it never runs the decomposition again on the already-modified base.
- save_converted: the published adapter (weights and config replaced by the conversion).
- as_base: a context in which the model computes with the unmodified base weights (W_res + B0 A0 = W): the
  initial adapter active instead of the trained one (evaluation.samples' base outputs).
- check_resume: a checkpoint holds the unconverted adapter, which fits only W_res of the same init; a resume
  re-runs the deterministic decomposition (full SVD, QR) on the freshly loaded unmodified base, so W_res and
  B0 A0 are the same as in the first attempt. A checkpoint of another init is refused (InvalidResumeFrom).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lft_api.conditions import Reason
from lft_api.spec import CONVERTED_INITS, TrainerConfig

from ..errors import InvalidInput

log = logging.getLogger(__name__)

INITIAL_ADAPTER_NAME = "lft_initial_adapter"  # PEFT uses the directory's name as the adapter's name
ADAPTER_CONFIG_FILE = "adapter_config.json"


def converts(config: TrainerConfig) -> bool:
    return config.lora.init in CONVERTED_INITS


def save_initial(peft_model, work: Path) -> Path:
    """The adapter as initialised, to work/lft_initial_adapter, before any training step."""
    dest = work / INITIAL_ADAPTER_NAME
    peft_model.save_pretrained(str(dest))
    path = dest / ADAPTER_CONFIG_FILE
    saved = json.loads(path.read_text())
    saved["init_lora_weights"] = True  # loading it must not decompose the (already residual) base again
    path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    return dest


def save_converted(peft_model, adapter_dir: Path, initial: Path) -> None:
    """Replace the saved adapter's weights and config by the conversion for the unmodified base (rank 2r)."""
    peft_model.save_pretrained(str(adapter_dir), path_initial_model_for_weight_conversion=str(initial))
    saved = json.loads((adapter_dir / ADAPTER_CONFIG_FILE).read_text())
    log.info("converted the %s adapter for the unmodified base model: rank %s, alpha %s", initial.name,
             saved.get("r"), saved.get("lora_alpha"))


@contextlib.contextmanager
def as_base(peft_model, initial: Path) -> Iterator[None]:
    """The unmodified base model: W_res + B0 A0 (the initial adapter active); the trained adapter afterwards."""
    active = peft_model.active_adapter
    peft_model.load_adapter(str(initial), adapter_name=INITIAL_ADAPTER_NAME)
    try:
        peft_model.set_adapter(INITIAL_ADAPTER_NAME)
        yield
    finally:
        peft_model.set_adapter(active)
        peft_model.delete_adapter(INITIAL_ADAPTER_NAME)


def checkpoint_init(checkpoint: Path) -> Any:
    """init_lora_weights of the adapter in a checkpoint (True, a name); None when the checkpoint has no config."""
    try:
        return json.loads((checkpoint / ADAPTER_CONFIG_FILE).read_text()).get("init_lora_weights")
    except (OSError, ValueError, AttributeError):
        return None


def check_resume(config: TrainerConfig, checkpoint: Path, uri: str) -> None:
    """A checkpoint of a pissa/olora run fits only a base decomposed the same way, and the other way round."""
    found = checkpoint_init(checkpoint)
    if found is None:
        return
    theirs = found if isinstance(found, str) and found in CONVERTED_INITS else None
    mine = config.lora.init if converts(config) else None
    if theirs != mine:
        raise InvalidInput(
            Reason.INVALID_RESUME_FROM,
            f"checkpoint {uri} was trained with lora.init {theirs or 'default or gaussian'}, this run has "
            f"lora.init {config.lora.init}: its adapter fits {'a base with modified weights' if theirs else 'the unmodified base'}"
            ", so resuming would change the model it continues", field="lora.init", file=uri)
